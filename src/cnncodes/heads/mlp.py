"""A small MLP head on the codes (one hidden layer, dropout), trained with AdamW and early stopping on the
validation split: the step beyond a linear probe that still trains in seconds on cached codes. Training rows are
read and standardised batch by batch, so codes on disk stay there."""
from __future__ import annotations

import numpy as np

from .base import (EarlyStopping, Head, check_class_weight, check_normalization, class_weights, softmax,
                   stratified_folds, views_accuracy)
from .softmax import SMALL_VALIDATION


class MLPHead(Head):
    mode = "mlp"

    def __init__(self, hidden: int = 1024, dropout: float = 0.5, epochs: int = 60, learning_rate: float = 1e-3,
                 weight_decay: float = 0.05, batch_size: int = 256, patience: int = 10, seed: int = 0,
                 normalize: str = "none", class_weight: str = "none", progress: bool = False):
        self.normalize = check_normalization(normalize)
        self.class_weight = check_class_weight(class_weight)
        self.hidden, self.dropout, self.epochs, self.learning_rate = hidden, dropout, epochs, learning_rate
        self.weight_decay, self.batch_size, self.patience, self.seed = weight_decay, batch_size, patience, seed

    def _network(self, d: int, k: int):
        import torch

        return torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(d, self.hidden), torch.nn.ReLU(),
                                   torch.nn.Dropout(self.dropout), torch.nn.Linear(self.hidden, k))

    def _fit(self, x, y, val, y_val):
        small = val is not None and len(val) == 1 and len(y_val) < SMALL_VALIDATION
        if small and self._cross_validated_epochs(x, y, val[0], y_val):
            return
        net, accuracies, best = self._train(x, y, val, y_val, stop_early=True)
        self.curve_ = [{"epoch": e + 1, "validation_accuracy": a} for e, a in enumerate(accuracies)]
        if best is not None:
            net.load_state_dict(best.state)
            self.validation_accuracy_ = best.best
        self._set_weights(net)

    def _cross_validated_epochs(self, x, y, x_val, y_val) -> bool:
        """The epoch count by stratified k-fold accuracy over train + validation, then one fit of every labelled
        image for that many epochs (the schedule as in the folds); False where no two classes have two images. A
        validation split of a few images ties most epochs and picks by chance."""
        xa, ya = np.vstack([np.asarray(x), np.asarray(x_val)]), np.concatenate([y, y_val])
        folds = stratified_folds(ya, self.seed)
        if not folds:
            return False
        curves = [self._train(xa[fit], ya[fit], [xa[held]], ya[held], stop_early=False)[1] for fit, held in folds]
        mean = np.mean(curves, 0)
        epochs = int(np.argmax(mean)) + 1
        self.selection_ = (f"{len(folds)}-fold cross-validation over train + validation (the validation split is "
                           f"small): {epochs} epochs")
        self.curve_ = [{"epoch": e + 1, "validation_accuracy": float(a)} for e, a in enumerate(mean)]
        self.validation_accuracy_ = float(mean[epochs - 1])
        self._set_weights(self._train(xa, ya, None, None, stop_early=False, epochs=epochs)[0])
        return True

    def _train(self, x, y, val, y_val, stop_early: bool, epochs: int | None = None):
        """(network, validation accuracy after each epoch, EarlyStopping or None): `epochs` of the schedule of
        self.epochs; with stop_early, stopped when `patience` epochs bring nothing better."""
        import torch

        from .lbfgs import streamed_stats

        self.mean_, self.scale_ = streamed_stats([x], self.normalize)
        torch.manual_seed(self.seed)
        net = self._network(x.shape[1], self.n_classes_)
        opt = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        yt = torch.from_numpy(y)
        val = None if val is None else [torch.from_numpy(self._standardized(v)) for v in val]
        gen = torch.Generator().manual_seed(self.seed)
        weight = class_weights(y, self.n_classes_, self.class_weight)
        stopper, accuracies = EarlyStopping(self.patience), []
        for _ in range(epochs or self.epochs):
            net.train()
            for idx in torch.randperm(len(x), generator=gen).split(self.batch_size):
                batch = torch.from_numpy(self._standardized(x[idx.numpy()]))  # read from the store batch by batch
                loss = torch.nn.functional.cross_entropy(net(batch), yt[idx], weight=weight, label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if val is None:
                continue
            net.eval()
            with torch.no_grad():
                accuracies.append(views_accuracy(lambda v: softmax(net(v).numpy()), val, y_val))
            if stopper.update(accuracies[-1], lambda: {k: v.clone() for k, v in net.state_dict().items()}) \
                    and stop_early:
                break
        return net, accuracies, stopper if stopper.state is not None else None

    def _set_weights(self, net) -> None:
        first, last = net[1], net[4]
        self.w1_, self.b1_ = first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy()
        self.w2_, self.b2_ = last.weight.detach().numpy().T.copy(), last.bias.detach().numpy().copy()

    def _logits(self, x) -> np.ndarray:
        return np.maximum(self._standardized(x) @ self.w1_ + self.b1_, 0) @ self.w2_ + self.b2_

    @property
    def input_dim(self) -> int:
        return self.w1_.shape[0]

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "w1": self.w1_, "b1": self.b1_, "w2": self.w2_, "b2": self.b2_}

    def torch_module(self):
        import torch

        from .modules import standardized_network

        second = torch.nn.Linear(*self.w2_.shape)
        with torch.no_grad():
            second.weight.copy_(torch.from_numpy(self.w2_.T.copy()))
            second.bias.copy_(torch.from_numpy(self.b2_))
        return standardized_network(self.normalize, self.mean_, self.scale_, self.w1_, self.b1_, torch.nn.ReLU(), second)

    @classmethod
    def from_state(cls, state: dict, normalize: str = "none") -> "MLPHead":
        head = cls(normalize=normalize)
        head.mean_, head.scale_, head.w1_, head.b1_, head.w2_, head.b2_ = (
            np.asarray(state[k], np.float32) for k in ("mean", "scale", "w1", "b1", "w2", "b2"))
        head.n_classes_ = head.w2_.shape[1]
        return head
