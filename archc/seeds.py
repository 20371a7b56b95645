"""The seeds archc takes (`[train] seed`, `[data] split_seed`, `--seed`): 0..MAX_SEED. A module of its own so that
the command line checks `--seed` without importing the spec model."""

MAX_SEED = 2**63 - 1  # numpy's generators take seeds >= 0, torch's manual_seed at most 2**64 - 1: both hold these
