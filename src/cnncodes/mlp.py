"""A small MLP head on the codes (one hidden layer, dropout), trained with AdamW and early stopping on the
validation split: the step beyond a linear probe that still trains in seconds on cached codes."""
from __future__ import annotations

import numpy as np

from .errors import CnnCodesError
from .head import ClassifierHead, normalize_codes, standardize


class MLPHead(ClassifierHead):
    mode = "mlp"

    def __init__(self, hidden: int = 1024, dropout: float = 0.5, epochs: int = 60, learning_rate: float = 1e-3,
                 weight_decay: float = 0.05, batch_size: int = 256, patience: int = 10, seed: int = 0,
                 normalize: str = "none", **_ignored):
        normalize_codes(np.zeros((1, 1)), normalize)
        self.hidden, self.dropout, self.epochs, self.learning_rate = hidden, dropout, epochs, learning_rate
        self.weight_decay, self.batch_size, self.patience, self.seed = weight_decay, batch_size, patience, seed
        self.normalize = normalize

    def _network(self, d: int, k: int):
        import torch

        return torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(d, self.hidden), torch.nn.ReLU(),
                                   torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, k))

    def fit(self, x_train, y_train, x_val=None, y_val=None, n_classes: int | None = None) -> "MLPHead":
        import torch

        x = normalize_codes(x_train, self.normalize)
        y = np.asarray(y_train, np.int64)
        if len(np.unique(y)) < 2:
            raise CnnCodesError("training data has a single class: a classifier needs at least two")
        self.n_classes_ = int(n_classes or y.max() + 1)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        torch.manual_seed(self.seed)
        net = self._network(x.shape[1], self.n_classes_)
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        xt, yt = torch.from_numpy(standardize(x, self.mean_, self.scale_)), torch.from_numpy(y)
        has_val = x_val is not None and len(x_val) > 0
        xv = (torch.from_numpy(standardize(normalize_codes(x_val, self.normalize), self.mean_, self.scale_))
              if has_val else None)
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, waited, self.curve_ = -1.0, None, 0, []
        for epoch in range(self.epochs):
            net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx], label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if not has_val:
                continue
            net.eval()
            with torch.no_grad():
                acc = float((net(xv).argmax(1).numpy() == y_val).mean())
            self.curve_.append({"epoch": epoch + 1, "validation_accuracy": acc})
            if acc > best:
                best, best_state, waited = acc, {k: v.clone() for k, v in net.state_dict().items()}, 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self._set_weights(net)
        self.search_ = []
        return self

    def _set_weights(self, net) -> None:
        first, last = net[1], net[4]
        self.w1_, self.b1_ = first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy()
        self.w2_, self.b2_ = last.weight.detach().numpy().T.copy(), last.bias.detach().numpy().copy()

    def decision_function(self, x) -> np.ndarray:
        x = normalize_codes(x, self.normalize)
        if x.shape[1] != self.input_dim:
            raise CnnCodesError(f"codes have {x.shape[1]} features but the head was trained on {self.input_dim}")
        return np.maximum(standardize(x, self.mean_, self.scale_) @ self.w1_ + self.b1_, 0) @ self.w2_ + self.b2_

    @property
    def input_dim(self) -> int:
        return self.w1_.shape[0]

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "w1": self.w1_, "b1": self.b1_, "w2": self.w2_, "b2": self.b2_}

    @classmethod
    def from_state(cls, state: dict, normalize: str = "none") -> "MLPHead":
        head = cls(normalize=normalize)
        head.mean_, head.scale_, head.w1_, head.b1_, head.w2_, head.b2_ = (
            np.asarray(state[k], np.float32) for k in ("mean", "scale", "w1", "b1", "w2", "b2"))
        head.n_classes_ = head.w2_.shape[1]
        return head


def make_head(mode: str = "tuned", **options):
    """The head behind --head: tuned or sgd (softmax regression), mlp, or finetune (needs backbone=NAME:cut=K)."""
    from .head import SoftmaxHead

    if mode == "mlp":
        return MLPHead(**options)
    if mode == "finetune":
        from .finetune import FineTuneHead

        return FineTuneHead(**options)
    return SoftmaxHead(mode=mode, **{k: v for k, v in options.items()
                                     if k in ("eval_every", "seed", "normalize", "progress")})
