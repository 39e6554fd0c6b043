"""The training loop as a library: one object that owns the model, optimizer, data sampler and run directory.

`train.py` is a thin command line over `Trainer.run`. The loop hands a `StepRecord`
(tokens and wall time of the step) to an optional hook after every optimizer step, and
writes whatever the hook returns into the same metrics line: that is how the profiler
adds FLOPs, MFU and energy without `gpt/` knowing about it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from gpt import distributed
from gpt.checkpoint import load_sharded_tensors, save_checkpoint, save_sharded_checkpoint
from gpt.config import DTYPE_NAMES, GPTConfig, TrainConfig
from gpt.data import TokenData
from gpt.files import atomic_write_text, dumps_json, write_json
from gpt.fsdp import local, shard
from gpt.model import GPT
from gpt.rundir import CONFIG_FILE, METRICS_FILE, sharded_checkpoint

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to the peak, then cosine decay to min_lr at the last step."""
    if step < config.warmup_iters:
        return config.learning_rate * (step + 1) / config.warmup_iters
    span = max(1, config.max_iters - config.warmup_iters)
    progress = min(1.0, (step - config.warmup_iters) / span)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_lr)


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings, none on biases and LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = torch.device(config.device).type == "cuda"
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), fused=fused)


@dataclass(frozen=True)
class StepRecord:
    step: int  # optimizer steps completed, this one included
    loss: float  # mean training loss over the step's micro-batches
    lr: float
    tokens: int  # tokens processed by this step on this rank (one card); the job's is tokens * world size
    step_time_s: float  # wall time of this step, host clock, device synchronised by loss.item()
    elapsed_s: float  # wall time since this process started training


class TrainingStopped(Exception):
    """The run ended early on purpose (signal) or by necessity (non-finite loss)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _StopRequest:
    """SIGINT/SIGTERM set a flag checked between steps, so a checkpoint is never cut mid-update."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def __call__(self, signal_number: int, frame) -> None:
        if self.signal_number is None:
            self.signal_number = signal_number
        elif signal_number == signal.SIGINT:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        # A repeated SIGTERM is ignored: torchrun forwards the SIGTERM or SIGINT it gets as SIGTERM, so a
        # signal sent to the whole process group arrives twice and must not cut the checkpoint short.

    @contextlib.contextmanager
    def installed(self):
        previous = {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Trainer:
    """Train `model_config` on `data`, keeping the run directory (`out_dir`) resumable at all times."""

    def __init__(
        self,
        model_config: GPTConfig,
        train_config: TrainConfig,
        data: TokenData,
        tokenizer_name: str,
        out_dir: Path,
        extra_config: dict[str, Any] | None = None,
        initial_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        data.check_fits(model_config.block_size)
        self.model_config, self.config, self.data = model_config, train_config, data
        self.tokenizer_name, self.out_dir = tokenizer_name, Path(out_dir)
        self.extra_config = extra_config or {}
        self.device = torch.device(train_config.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls outside autocast may use TF32
        torch.manual_seed(train_config.seed)
        self.model = GPT(model_config)
        if initial_weights is not None:  # fine-tuning: start from these instead of the random initialisation
            self.model.load_state_dict(initial_weights)
        self.model.to(self.device)
        self.sharded = train_config.fsdp
        if self.sharded:
            distributed.init_alone(self.device)  # FSDP needs a process group, even of one, without torchrun
            shard(self.model, self.device, DTYPES[train_config.dtype])  # before the optimizer sees the parameters
        self.optimizer = make_optimizer(self.model, train_config)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train_config.dtype == "float16")
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        # Under torchrun every rank starts from the same seed, so the weights agree before DDP's first broadcast
        # (and FSDP keeps each rank's slice of the same full tensors).
        replicated = self.world_size > 1 and not self.sharded
        self.ddp = torch.nn.parallel.DistributedDataParallel(self.model) if replicated else None
        self.mode = "fsdp" if self.sharded else "ddp" if self.ddp is not None else "single"
        wrapped = self.ddp or self.model
        self.forward = torch.compile(wrapped) if train_config.compile else wrapped
        self.sampler = torch.Generator().manual_seed(train_config.seed)  # draws the training windows
        self.step = 0
        self.val_loss: float | None = None
        self.elapsed_s = 0.0
        self.saved_step: int | None = None  # step of the checkpoint on disk; None until one is written

    # --------------------------------------------------------------------- state

    def meta(self) -> dict[str, Any]:
        """Everything a checkpoint holds that is not a tensor."""
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": dataclasses.asdict(self.config),
            "tokenizer": self.tokenizer_name,
            "run_info": self.extra_config,
            "step": self.step,
            "val_loss": self.val_loss,
            "elapsed_s": self.elapsed_s,
            "world_size": self.world_size,
            "mode": self.mode,
        }

    def sharded_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The tensors of an FSDP checkpoint (this rank's shards of the weights and AdamW moments, RNG states),
        and the optimizer's state dict, whose "state" they share. Its param_groups (hyperparameters, not
        tensors) stay out of the checkpoint, which then holds tensors only: the flags given now set them."""
        model, optimizer = get_state_dict(self.model, self.optimizer)
        rng = {"torch": torch.get_rng_state(), "sampler": self.sampler.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": model, "optimizer": {"state": optimizer["state"]}, "rng": rng}, optimizer

    def state(self) -> dict[str, Any]:
        return {
            **self.meta(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "sampler": self.sampler.get_state(),
            },
        }

    def load_state(self, payload: dict[str, Any]) -> None:
        """Restore from a checkpoint's payload; an FSDP run reads its tensors from ckpt.dcp, resharded to this world."""
        self.step, self.val_loss, self.elapsed_s = payload["step"], payload["val_loss"], payload["elapsed_s"]
        if self.sharded:
            tensors, optimizer = self.sharded_state()  # allocated and sharded as this world shards them
            load_sharded_tensors(sharded_checkpoint(self.out_dir), tensors)  # in place, so `optimizer` too
            set_state_dict(self.model, self.optimizer, model_state_dict=tensors["model"], optim_state_dict=optimizer)
            rng = tensors["rng"]
            if "cuda" in rng:
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scaler.load_state_dict(payload["scaler"])
            rng = payload["rng"]
            if torch.cuda.is_available() and rng["cuda"]:
                torch.cuda.set_rng_state_all(rng["cuda"])
        torch.set_rng_state(rng["torch"])
        self.sampler.set_state(rng["sampler"])

    def save(self) -> Path:
        """Checkpoint the current state, but only a healthy model: a diverged one would replace the last good one.

        Every rank checks health (all ranks agree on the verdict); rank 0 alone writes ckpt.pt, while
        every rank writes its shards of an FSDP checkpoint.
        """
        self.check_healthy()
        path = self.out_dir / "ckpt.pt"
        if self.sharded:
            path = save_sharded_checkpoint(self.out_dir, self.meta(), self.sharded_state()[0])
        elif distributed.is_main():
            path = save_checkpoint(self.out_dir, self.state())
        self.saved_step = self.step
        return path

    def resume(self, payload: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint, and drop metrics lines written after it (they will be redone)."""
        self.load_state(payload)
        self.saved_step = self.step
        if distributed.is_main():
            self._truncate_metrics_after(self.step)

    # --------------------------------------------------------------------- divergence

    def non_finite_weights(self) -> int:
        """How many parameter values are NaN or infinite, the same count on every rank (summed over FSDP's
        shards, the largest of DDP's replicas), so that all ranks stop or save together."""
        bad = int(torch.stack([(~local(p).isfinite()).sum() for p in self.model.parameters()]).sum())
        return distributed.agree(bad, self.device, self.sharded)

    def _diverged(self, what: str) -> TrainingStopped:
        """The stop for a diverged run, naming the checkpoint that is kept and a flag value to try next."""
        lower = f"--learning-rate {self.config.learning_rate / 10:.3g}"
        if self.saved_step is None:
            kept = (f"no checkpoint was written (none had finite weights and validation loss). Start again with "
                    f"python train.py --out-dir {self.out_dir} --overwrite {lower}")
        else:
            kept = (f"the checkpoint of step {self.saved_step} (finite weights and validation loss) is kept in "
                    f"{self.out_dir}. Continue with: python train.py --resume --out-dir {self.out_dir} {lower}")
        return TrainingStopped(f"the run diverged: {what}; {kept} (or raise --warmup-iters, or use --dtype float32)",
                               exit_code=3)

    def check_healthy(self) -> None:
        """Raise TrainingStopped (exit 3) if the validation loss or any weight is not finite."""
        if self.val_loss is not None and not math.isfinite(self.val_loss):
            raise self._diverged(f"validation loss {self.val_loss} at step {self.step}")
        bad = self.non_finite_weights()
        if bad:
            raise self._diverged(f"{bad:,} non-finite weights after step {self.step}")

    # --------------------------------------------------------------------- steps

    def _autocast(self):
        dtype = DTYPES[self.config.dtype]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def train_step(self) -> StepRecord:
        """One optimizer step over grad_accum micro-batches. Raises TrainingStopped on a non-finite loss."""
        started = time.perf_counter()
        lr = learning_rate_at(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        for micro_step in range(self.config.grad_accum):
            x, y = self.data.batch("train", self.config.batch_size, self.model_config.block_size, self.sampler,
                                   self.device, self.rank, self.world_size)
            last = micro_step == self.config.grad_accum - 1
            # DDP all-reduces (FSDP reduce-scatters) gradients on the last micro-step only; the others accumulate.
            syncing = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            if self.sharded:
                self.model.set_requires_gradient_sync(last)
            with syncing:
                with self._autocast():
                    _, loss = self.forward(x, y)
                loss = loss / self.config.grad_accum
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
        loss_value = distributed.mean(total_loss).item()  # the global batch's loss, the same on every rank
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise self._diverged(f"training loss {loss_value} at step {self.step + 1}")
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        step_time = time.perf_counter() - started
        self.elapsed_s += step_time
        tokens = self.config.batch_size * self.config.grad_accum * self.model_config.block_size  # this rank's
        return StepRecord(self.step, loss_value, lr, tokens, step_time, self.elapsed_s)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over eval_iters batches; the same batches every time, so passes compare."""
        self.model.eval()
        fixed = torch.Generator().manual_seed(self.config.seed + 1)
        losses = []
        for _ in range(self.config.eval_iters):
            x, y = self.data.batch("val", self.config.batch_size, self.model_config.block_size, fixed, self.device)
            with self._autocast():
                _, loss = self.forward(x, y)
            losses.append(loss.item())
        # Every rank computed the same mean; averaging it makes a NaN on any rank a NaN on all, so all stop together.
        mean = torch.tensor(sum(losses) / len(losses), dtype=torch.float64, device=self.device)
        self.val_loss = distributed.mean(mean).item()
        return self.val_loss

    # --------------------------------------------------------------------- the loop

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS_FILE

    def log(self, record: dict[str, Any]) -> None:
        """Append one strict JSON object to metrics.jsonl (a NaN loss is written as null); rank 0 only."""
        if not distributed.is_main():
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(dumps_json(record) + "\n")

    def _truncate_metrics_after(self, step: int) -> None:
        """Keep the log lines up to `step`; later ones (and torn or summary lines) belong to a lost future."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") != "summary" and record.get("step", 0) <= step:
                kept.append(line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))  # a crash here must not lose the log

    def write_config(self) -> None:
        resolved = {
            "model": self.model_config.to_dict(),
            "train": dataclasses.asdict(self.config),
            "tokenizer": self.tokenizer_name,
            "data": self.data.source,
            "params": self.model.num_params(),
            "world_size": self.world_size,
            "mode": self.mode,
            "global_batch_size": self.config.batch_size * self.world_size,
            **self.extra_config,
        }
        if not distributed.is_main():
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / CONFIG_FILE, resolved)

    def run(
        self,
        on_step: Callable[[StepRecord], dict[str, Any]] | None = None,
        on_progress: Callable[[StepRecord, dict[str, Any]], None] | None = None,
    ) -> None:
        """Train until max_iters; evaluate and checkpoint on schedule; stop cleanly on SIGINT/SIGTERM.

        on_step(record) may return extra metric fields, logged with the step;
        on_progress(record, fields) is for display (progress bars).
        """
        self.write_config()
        if self.step == 0:
            self.log({"kind": "eval", "step": 0, "val_loss": self.evaluate()})
        stop = _StopRequest()
        with stop.installed():
            while self.step < self.config.max_iters:
                record = self.train_step()
                per_card = record.tokens / record.step_time_s
                fields = dataclasses.asdict(record) | {
                    "tokens_per_sec": per_card,  # per card, as in a single-process run
                    "world_size": self.world_size,
                    "mode": self.mode,
                    "job_tokens_per_sec": per_card * self.world_size,
                }
                fields |= on_step(record) if on_step else {}
                self.log({"kind": "step", **fields})
                if on_progress:
                    on_progress(record, fields)
                last = self.step == self.config.max_iters
                if self.step % self.config.eval_interval == 0 or last:
                    self.log({"kind": "eval", "step": self.step, "val_loss": self.evaluate()})
                    if not math.isfinite(self.val_loss):
                        raise self._diverged(f"validation loss {self.val_loss} at step {self.step}")
                stopping = distributed.any_rank(stop.signal_number is not None, self.device)
                if stopping and stop.signal_number is None:  # another rank was signalled: stop with it
                    stop.signal_number = signal.SIGTERM
                if self.step % self.config.checkpoint_interval == 0 or last or stopping:
                    self.save()
                if stopping:
                    name = signal.Signals(stop.signal_number).name
                    raise TrainingStopped(
                        f"stopped by {name} at step {self.step}; checkpoint saved in {self.out_dir}. "
                        "Continue with: python train.py --resume --out-dir " + str(self.out_dir),
                        exit_code=128 + stop.signal_number,
                    )
