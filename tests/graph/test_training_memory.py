"""One training-memory estimate (archc.graph.memory.training) for validate's line, its warnings and `archc train`'s
refusal; the refusal compares with the memory the run uses: each rank's GPU on CUDA, the ranks on this machine together
on the CPU. No GPU here: the GPU's memory is given as a number, as archc.train.api.check_memory passes it."""
from __future__ import annotations

import pytest

from archc.errors import ArchcError
from archc.graph.memory import check_training, training, training_refusals
from archc.pipeline import compile_spec

MIB = 2**20


def _model(**train) -> object:
    """x[256] -> linear(1024) -> linear(1024) -> linear(10): 1,323,018 parameters, 8 KiB of activations an example."""
    layers = [{"op": "linear", "out_features": 1024}, {"op": "linear", "out_features": 1024},
              {"op": "linear", "out_features": 10}]
    return compile_spec({"archc": 1, "model": {"name": "m"}, "inputs": {"x": {"shape": [256]}},
                         "task": {"kind": "classification"}, "layers": layers, "train": {"batch_size": 8} | train})


def test_ddp_counts_its_gradient_buckets_and_fsdp_shards(monkeypatch):
    c = _model()
    params = c.graph.total_params
    one = training(c.graph, c.spec.train, 1)
    assert (one.weights, one.gradients, one.buckets, one.optimizer) == (params * 4, params * 4, 0, params * 8)
    two = training(c.graph, c.spec.train, 2)
    assert two.buckets == params * 4 and two.total == params * 20 + two.activations  # DDP's reducer copy
    fsdp = _model(strategy="fsdp")
    sharded = training(fsdp.graph, fsdp.spec.train, 2)
    assert sharded.buckets == 0 and sharded.weights == params * 2 and sharded.optimizer == params * 4
    assert sharded.activations == two.activations == one.activations // 2  # the batch is shared either way


def test_the_refusal_compares_with_the_gpu_where_the_run_goes_on_one(monkeypatch):
    monkeypatch.delenv("ARCHC_MEMORY_LIMIT", raising=False)
    c = _model()
    need = training(c.graph, c.spec.train, 1).total  # ~25 MiB
    # on a GPU with less than the model needs: refused, naming the GPU's memory, whatever the host has
    refused = training_refusals(c.graph, c.spec.train, 1, device_memory=need - 1)
    assert len(refused) == 1 and refused[0].where == "layers"
    assert refused[0].message.startswith("expected training to fit in the GPU's memory (")
    assert not training_refusals(c.graph, c.spec.train, 1, device_memory=need)  # exactly enough fits
    # 4 ranks, one GPU each: each rank against its own GPU's memory; the same 4 on this machine's CPU share it
    four = training(c.graph, c.spec.train, 4).total
    assert not training_refusals(c.graph, c.spec.train, 4, device_memory=four)
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(four))
    assert training_refusals(c.graph, c.spec.train, 4) and not training_refusals(c.graph, c.spec.train, 4, here=1)

def test_the_cpu_ranks_on_one_machine_share_its_memory(monkeypatch):
    c = _model()
    per_rank = training(c.graph, c.spec.train, 2).total
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(2 * per_rank))
    assert not training_refusals(c.graph, c.spec.train, 2)  # both ranks here: 2 x per rank fits exactly
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(2 * per_rank - 1))
    refused = training_refusals(c.graph, c.spec.train, 2)
    assert len(refused) == 1 and "shared by the 2 ranks on this machine" in refused[0].message
    assert "received 2 ranks x " in refused[0].message and "strategy = \"fsdp\"" in refused[0].hint
    # the same two ranks on two machines (one each): each machine holds one rank
    assert not training_refusals(c.graph, c.spec.train, 2, here=1)
    # a GPU per rank: ARCHC_MEMORY_LIMIT replaces the GPU's memory too (a run that knows better)
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(per_rank - 1))
    assert training_refusals(c.graph, c.spec.train, 2, device_memory=10 * per_rank)
    with pytest.raises(ArchcError, match="in the GPU's memory"):
        check_training(c.graph, c.spec.train, 2, device_memory=10 * per_rank, file="m.json")


def test_activations_alone_name_the_batch(monkeypatch):
    c = _model(batch_size=100_000)
    monkeypatch.setenv("ARCHC_MEMORY_LIMIT", str(64 * MIB))
    refused = training_refusals(c.graph, c.spec.train, 1)
    assert refused[0].where == "train.batch_size" and "per example x batch 100000 = " in refused[0].message
    # FSDP shards the weights but not the examples: 4 ranks take a quarter each
    assert "x 25000 examples per rank (batch 100000 over 4 ranks)" in training_refusals(
        c.graph, c.spec.train, 4, here=1)[0].message
