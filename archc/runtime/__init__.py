"""ONNX Runtime side of `archc infer`: open, check, run and present models; never imports torch."""
from archc.runtime.generate import GenerationResult, generate
from archc.runtime.io import check_output_path, read_inputs, write_outputs
from archc.runtime.present import records, table
from archc.runtime.session import Model, TensorSig, choose_providers, cuda_available

__all__ = [
    "GenerationResult", "Model", "TensorSig", "check_output_path", "choose_providers", "cuda_available",
    "generate", "read_inputs", "records", "table", "write_outputs",
]
