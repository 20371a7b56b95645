"""[train] strategy's names: how --nproc ranks hold the model (the ground: imports nothing; the CLI reads it at
startup without the compiler). ddp: DistributedDataParallel, a full copy on every rank; fsdp: FSDP2, sharded per
block (archc.train.sharding)."""

STRATEGIES = ("ddp", "fsdp")
