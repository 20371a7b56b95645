"""torchrun's entry point for one rank: `torchrun ... -m archc.train.worker SPEC [flags]` (same as archc.train)."""
from archc.train.__main__ import main

if __name__ == "__main__":
    main()
