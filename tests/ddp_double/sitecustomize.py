"""Test double for tests/test_ddp.py: DistributedDataParallel that skips its gradient all-reduce.

Python imports `sitecustomize` at start-up from the path, so putting this folder on PYTHONPATH
reaches every process torchrun starts. Only with ALLBLAST_TEST_DDP_NO_ALLREDUCE=1: each rank then
steps on its own gradients, as a broken all-reduce would make it, and the DDP test must fail.
"""
import os

if os.environ.get("ALLBLAST_TEST_DDP_NO_ALLREDUCE") == "1":
    import torch
    from torch.nn.parallel import DistributedDataParallel

    _init = DistributedDataParallel.__init__

    def _init_without_allreduce(self, *args, **kwargs):
        _init(self, *args, **kwargs)

        def local_gradients_only(state, bucket):
            done = torch.futures.Future()
            done.set_result(bucket.buffer())  # this rank's own gradients, never averaged
            return done

        self.register_comm_hook(None, local_gradients_only)

    DistributedDataParallel.__init__ = _init_without_allreduce
