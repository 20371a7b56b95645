"""The emitter: archc writes the ONNX graph itself, each op through its `emit` hook (imports onnx_ir, not torch)."""
