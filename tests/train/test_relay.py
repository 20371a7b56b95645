"""`--nproc`: the launcher relays what the ranks print, without torchrun's log lines and failure report."""
from __future__ import annotations

import io

from archc.train.distributed import relay_stderr

TORCHRUN_TAIL = b"""W1127 09:05:29.448000 3276 /x/site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 3308 closing signal SIGTERM
E1127 09:05:29.464000 3276 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: %s) local_rank: 1 (pid: 3307) of binary: /x/python
Traceback (most recent call last):
  File "/x/torch/distributed/run.py", line 1032, in <module>
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
archc.train FAILED
============================================================
"""


def relay(text: bytes):
    dst = io.BytesIO()
    return relay_stderr(io.BytesIO(text), dst), dst.getvalue()


def test_rank_messages_are_kept_back_and_torchrun_report_dropped():
    report, shown = relay(b"a warning from a rank\nerror: train: diverged\nerror: train: diverged\n"
                          + TORCHRUN_TAIL % b"1")
    assert shown == b"a warning from a rank\n"
    assert report.errors == ["train: diverged", "train: diverged"]  # the launcher reports each once
    assert report.cause == "rank 1 exited with status 1"


def test_a_rank_killed_by_a_signal_is_named():
    report, shown = relay(b"Traceback (most recent call last):\n  a rank's own traceback is kept\n"
                          + TORCHRUN_TAIL % b"-9")
    assert shown.startswith(b"Traceback") and b"ChildFailedError" not in shown
    assert report.errors == [] and report.cause == "rank 1 was killed by SIGKILL"
