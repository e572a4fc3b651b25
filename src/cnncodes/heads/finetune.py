"""Fine-tuning the last block(s) of a backbone on cached activations: the precompute-once idea one level deeper.

The trunk ran once (its activation maps are codes of a NAME:cut=K backbone, cached like any codes); each epoch
runs only the top K blocks, the head convolution and a new classifier. Training is linear-probe-then-fine-tune
(LP-FT, Kumar et al. 2022): the classifier is first fitted on the frozen top's pooled features, so the first
fine-tuning steps do not wreck the pretrained blocks with the gradients of a random classifier.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import CnnCodesError
from .base import EarlyStopping, Head, check_class_weight, class_weights, softmax, views_accuracy


_POOLED = 3  # net_[:3] is the top blocks, the pooling and the flattening: the fine-tuned features
# The schedule: Lite0's last block on CIFAR-10 (int8 activations, 2 Xeon cores with AMX) reached 93.0%, 93.5%, 93.9%
# and 94.1% validation accuracy with 2, 3, 4 and 6 epochs at a peak learning rate of 3e-4, in 84, 105, 136 and 193 s;
# 4 is the longest that keeps a whole first run within 5 minutes there. At 6e-4: 93.8%, 94.3% and 94.3% with 2, 3 and
# 4 epochs; 1e-3 and 2e-3 gave 94.1% with 3 (benchmarks/finetune_schedule.py; docs/benchmarks.md, "A first run")
EPOCHS = 4
LEARNING_RATE = 6e-4


class Seen(NamedTuple):
    """What fitting computed that the unknown detector needs (UnknownDetector.fit reads it instead of passing the
    rows through the top again, about 30,000 passes of the top on CIFAR-10): the pretrained top's pooled features
    (the network's own codes, `detector_features`) of the training rows, in the order fit took them (float16: the
    detector keeps its reference in float16), and of the first validation view (float32), with the kept epoch's
    logits of that view."""
    train_codes: np.ndarray
    validation_codes: np.ndarray
    validation_logits: np.ndarray


class FineTuneHead(Head):
    mode = "finetune"
    normalize = "none"  # the blocks expect the raw activations
    seen_: Seen | None = None  # set by fitting with validation, read (and dropped) by the run's unknown detector

    def __init__(self, backbone: str, epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE,
                 weight_decay: float = 0.05, batch_size: int = 128, dropout: float = 0.2, label_smoothing: float = 0.1,
                 patience: int = 2, seed: int = 0, progress: bool = False, normalize: str = "none",
                 class_weight: str = "none", precision: str = "auto"):
        if normalize != "none":
            raise CnnCodesError("--normalize does not apply to --finetune (the blocks take the raw activations)")
        self.backbone, self.epochs, self.learning_rate, self.weight_decay = backbone, epochs, learning_rate, weight_decay
        self.batch_size, self.dropout, self.label_smoothing, self.patience = batch_size, dropout, label_smoothing, patience
        self.seed, self.progress, self.class_weight = seed, progress, check_class_weight(class_weight)
        self.precision = precision  # fp32, bf16, or auto: bf16 where the CPU multiplies it natively (--precision)
        self._build()  # fails now, before any training, when the backbone is not a cut backbone

    def _build(self, n_classes: int = 1) -> None:
        import torch

        from ..backbones import top_network

        top, self.shape_ = top_network(self.backbone)
        width = top[-1][0].out_channels
        self.net_ = torch.nn.Sequential(top, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Dropout(self.dropout), torch.nn.Linear(width, n_classes))

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.shape_))

    def _batches(self, x: np.ndarray, order=None, size: int = 256):
        """Activation maps as float32 NCHW tensors in the channels_last layout the convolutions are fast in."""
        import torch

        order = np.arange(len(x)) if order is None else order
        for start in range(0, len(order), size):
            idx = np.sort(order[start:start + size])  # sorted rows read faster from a large array
            rows = torch.from_numpy(np.asarray(x[idx], np.float32))
            yield idx, rows.view(-1, *self.shape_).contiguous(memory_format=torch.channels_last)

    def _pooled(self, x: np.ndarray, *tops) -> list[np.ndarray]:
        """The pooled features of every row through each of `tops` (default: the fine-tuned top), in evaluation mode
        and the precision of the extraction; the rows are read once for all of them."""
        import torch

        tops = tops or (self.net_[:_POOLED],)
        self.net_.eval()
        outs = [[] for _ in tops]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16()):
            for _, batch in self._batches(x):
                for out, top in zip(outs, tops):
                    out.append(top(batch).float().numpy())
        return [np.vstack(out) if out else np.zeros((0, self.net_[-1].in_features), np.float32) for out in outs]

    def _pretrained_top(self):
        """The top as it came pretrained, pooled (made on first use; never trained, never saved: the weights
        package has it)."""
        if getattr(self, "pretrained_", None) is None:
            import torch

            from ..backbones import top_network

            self.pretrained_ = torch.nn.Sequential(top_network(self.backbone)[0], torch.nn.AdaptiveAvgPool2d(1),
                                                   torch.nn.Flatten()).eval()
        return self.pretrained_

    def _bf16(self) -> bool:
        from ..codes.runtime import resolve_precision

        return resolve_precision(getattr(self, "precision", "auto"), "cpu") == "bf16"

    def embed(self, x) -> np.ndarray:
        """The fine-tuned pooled features (what the report maps with t-SNE)."""
        self.check_input(x)
        return self._pooled(x)[0]

    def detector_features(self, x) -> np.ndarray:
        """The pretrained top's pooled features: the network's own codes. The unknown detector measures distances
        between them, not between the fine-tuned features, which make the known classes more separable and tell
        less of what lies outside them (`benchmarks/open_set.py --finetune 1`, CIFAR-10's 6/4 splits: AUROC 0.941
        against 0.919)."""
        self.check_input(x)
        return self._pooled(x, self._pretrained_top())[0]

    def detector_inputs(self, x) -> tuple[np.ndarray, np.ndarray]:
        self.check_input(x)
        pretrained, tuned = self._pooled(x, self._pretrained_top(), self.net_[:_POOLED])
        return pretrained, self._classify(tuned)

    def top_map(self, maps):
        """The last feature map (N, C, H, W) the fine-tuned top makes of activation maps (a tensor), before pooling."""
        return self.net_[0](maps)

    def position_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, K) logit terms of the last feature map's P positions (rows of C features) and the (K,) bias: their
        mean plus the bias is the logits (explain.py)."""
        linear = self.net_[-1]
        return rows @ linear.weight.detach().numpy().T, linear.bias.detach().numpy()

    def _logits(self, x) -> np.ndarray:
        return self._classify(self._pooled(x)[0])

    def _classify(self, pooled: np.ndarray) -> np.ndarray:
        """Logits of pooled features, in float32 (dropout is off outside training): the classifier's terms of one
        position, the pooled one."""
        terms, bias = self.position_terms(pooled)
        return terms + bias

    def _fit(self, x_train, y, val, y_val):
        import torch
        from tqdm import tqdm

        if x_train.shape[1] != self.input_dim:
            raise CnnCodesError(f"codes have {x_train.shape[1]} features but {self.backbone} activations have "
                                f"{self.input_dim}: the codes do not match the backbone")
        torch.manual_seed(self.seed)
        self._build(self.n_classes_)
        self.weight_ = class_weights(y, self.n_classes_, self.class_weight)
        train_codes = self._linear_probe(x_train, y)
        stopper = EarlyStopping(self.patience)
        if val is not None:
            row, validation_codes, val_logits = self._record(0, None, val, y_val)  # (the top is the pretrained one)
            self.curve_.append(row)
            stopper.update(row["validation_accuracy"], lambda: (_copy_state(self.net_), val_logits))
        opt = self._optimizer()
        steps = self.epochs * -(-len(x_train) // self.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.learning_rate, total_steps=max(steps, 1), pct_start=0.1)
        rng = np.random.default_rng(self.seed)
        for epoch in range(1, self.epochs + 1):
            self.net_.train()
            correct = 0
            bar = tqdm(total=len(x_train), desc=f"fine-tuning epoch {epoch}/{self.epochs}", unit="img",
                       disable=None if self.progress else True, leave=False)
            for idx, batch in self._batches(x_train, rng.permutation(len(x_train)), self.batch_size):
                target = torch.from_numpy(y[idx])
                logits = self._step(opt, batch, target)
                sched.step()
                correct += int((logits.argmax(1) == target).sum())
                bar.update(len(idx))
            bar.close()
            if val is None:
                continue
            row, _, val_logits = self._record(epoch, correct / len(x_train), val, y_val)
            self.curve_.append(row)
            if self.progress:
                print(f"fine-tuning: epoch {epoch}, validation accuracy {row['validation_accuracy']:.4f}", flush=True)
            if stopper.update(row["validation_accuracy"], lambda: (_copy_state(self.net_), val_logits)):
                break
        self.seen_ = None
        if stopper.state is not None:
            state, val_logits = stopper.state
            self.net_.load_state_dict(state)
            self.validation_accuracy_ = stopper.best
            self.seen_ = Seen(train_codes, validation_codes, val_logits)
        self.net_.eval()

    def _optimizer(self):
        import torch

        return torch.optim.AdamW(self.net_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)

    def _step(self, opt, batch, target):
        """One training step on a batch of activation maps; returns its logits."""
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16()):
            logits = self.net_(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), target, weight=self.weight_,
                                               label_smoothing=self.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return logits

    def _linear_probe(self, x, y) -> np.ndarray:
        """Fit the classifier on the frozen top's pooled features (full-batch L-BFGS: seconds on 1,280-d); returns
        those features as float16 (Seen)."""
        import torch

        if self.progress:
            print(f"fine-tuning: linear probe on the frozen top's features of {len(x):,} images", flush=True)
        codes = self.embed(x)
        feats = torch.from_numpy(codes)
        target = torch.from_numpy(y)
        linear = self.net_[-1]
        opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=200, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(linear(feats), target, weight=self.weight_) + 1e-4 * linear.weight.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        return codes.astype(np.float16)

    def _record(self, epoch: int, train_accuracy, val, y_val) -> tuple[dict, np.ndarray, np.ndarray]:
        """The curve's row of an epoch, and the pooled features and logits of the first validation view."""
        pooled = [self._pooled(v)[0] for v in val]
        logits = [self._classify(p) for p in pooled]
        row = {"epoch": epoch, "validation_accuracy": views_accuracy(softmax, logits, y_val)}
        if train_accuracy is not None:
            row["train_accuracy"] = float(train_accuracy)
        return row, pooled[0], logits[0]

    def state(self) -> dict[str, np.ndarray]:
        return {f"net.{k}": v.detach().numpy() for k, v in self.net_.state_dict().items()}

    def torch_module(self):
        return self._on_codes(self.net_)

    def torch_parts(self):
        return self._on_codes(self._pretrained_top()), self.torch_module()

    def _on_codes(self, net):
        """A copy of `net` taking the flat codes (activation maps) as stored, in evaluation mode."""
        import copy

        import torch

        return torch.nn.Sequential(torch.nn.Unflatten(1, self.shape_), *copy.deepcopy(net)).eval()

    @classmethod
    def from_state(cls, state: dict, backbone: str) -> "FineTuneHead":
        import torch

        head = cls(backbone)
        weights = {k[4:]: torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("net.")}
        head.n_classes_ = int(weights[f"{len(head.net_) - 1}.weight"].shape[0])
        head._build(head.n_classes_)
        try:
            head.net_.load_state_dict(weights)
        except RuntimeError as exc:
            raise CnnCodesError(f"the fine-tuned weights do not fit {backbone}: {str(exc).splitlines()[0]}") from None
        head.net_.eval()
        return head


def step_seconds_per_image(backbone: str, precision: str = "auto", steps: int = 6) -> float:
    """Seconds per image of a training step of `backbone`'s top on this machine now: the median of `steps` steps
    on a batch of random activation maps, after two to warm up (about a second where fine-tuning is fast). An
    epoch costs about this much per training image, so it tells before any training whether fine-tuning fits a
    first run (presets.choose_head)."""
    import time

    import torch

    head = FineTuneHead(backbone, precision=precision)
    head._build(10)
    head.weight_ = None
    head.net_.train()
    opt = head._optimizer()
    batch = torch.randn(head.batch_size, *head.shape_, generator=torch.Generator().manual_seed(0))
    batch = batch.contiguous(memory_format=torch.channels_last)  # as _batches lays the maps out
    target = torch.arange(head.batch_size) % 10
    seconds = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        head._step(opt, batch, target)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds[2:])) / head.batch_size


def _copy_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
