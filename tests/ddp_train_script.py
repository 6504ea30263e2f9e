"""Run by tests/test_distributed.py under torchrun: train a small SAE with DistributedTrainer, save the parameters."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch.distributed as dist

from sae.models import SAEConfig
from sae.store import Store
from sae.train import TrainConfig
from sae.train.ddp import DistributedTrainer, process_group


def main() -> None:
    args = json.loads(sys.argv[1])
    with process_group("cpu"):
        trainer = DistributedTrainer(SAEConfig(**args["sae"]), TrainConfig(**args["train"]), run_dir=args["run_dir"], progress=False)
        model = trainer.fit(Store.open(args["store"]), resume=args.get("resume", False), stop_after=args.get("stop_after"))
        if trainer.rank == 0:
            np.savez(args["out"], world=trainer.world, step=trainer.state_.step, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
        if dist.is_initialized():
            dist.barrier()


if __name__ == "__main__":
    main()
