"""A plain per-step transcription of spec/optimizers.md in float64, sharing no code with cmopt.

Written for reading, not speed: Python lists of entries, one tensor at a time, the buffer mean
recomputed from the stored entries each step (cmopt keeps a running sum instead).
"""

from __future__ import annotations

import math

import torch


class Entry:
    def __init__(self, priority: float, stored: dict[int, torch.Tensor]):
        self.priority = priority
        self.stored = stored  # tensor index -> stored tensor; a missing index reads as zeros


class ReferenceGroup:
    def __init__(self, kind: str, params: list[torch.Tensor], **hp):
        self.kind, self.params, self.hp = kind, params, hp
        self.entries: list[Entry] = []
        self.state: dict[int, dict] = {}

    def step(self, grads: list[torch.Tensor | None]) -> None:
        active = [i for i, g in enumerate(grads) if g is not None]
        if not active:
            return
        capacity, decay = self.hp["capacity"], self.hp["decay"]
        s = 0.0
        for i in active:
            s += math.sqrt(float((grads[i] ** 2).sum()))
        candidates = {}
        for i in active:
            first = i not in self.state
            if first:
                self.state[i] = {}
            mean = self._mean(i)
            step = {"adam_cm": self._adam_cm, "adam_cg": self._adam_cg, "sgd_cm": self._sgd_cm}[self.kind]
            candidates[i] = step(i, grads[i], mean, first).clone()
        if capacity == 0:
            return
        if len(self.entries) < capacity:
            self.entries.append(Entry(s, candidates))
        else:
            lowest = min(range(len(self.entries)), key=lambda j: (self.entries[j].priority, j))
            if s > self.entries[lowest].priority:
                self.entries[lowest].priority = s
                self.entries[lowest].stored.update(candidates)  # tensors without a gradient keep theirs
        for entry in self.entries:
            entry.priority *= decay

    def priorities(self) -> list[float]:
        return [e.priority for e in self.entries]

    def _mean(self, i: int) -> torch.Tensor:
        zeros = torch.zeros_like(self.params[i])
        if not self.entries:
            return zeros
        return sum((e.stored.get(i, zeros) for e in self.entries), zeros) / len(self.entries)

    def _adam_update(self, i, st, direction, squared):
        lr, eps = self.hp["lr"], self.hp["eps"]
        beta1, beta2 = self.hp["betas"]
        st["t"] += 1
        st["v"] = beta2 * st["v"] + (1 - beta2) * squared**2
        denom = st["v"].sqrt() / math.sqrt(1 - beta2 ** st["t"]) + eps
        self.params[i] -= lr / (1 - beta1 ** st["t"]) * direction / denom

    def _adam_cm(self, i, g, mean, first):
        p, st = self.params[i], self.state[i]
        lr, wd, beta1 = self.hp["lr"], self.hp["weight_decay"], self.hp["betas"][0]
        if wd != 0:
            p *= 1 - lr * wd
        if first:
            st.update(m=torch.zeros_like(p), v=torch.zeros_like(p), t=0)
            if self.hp["capacity"] > 0:
                st["t"] = 1  # the first step stores g and moves nothing
                return g
        st["m"] = beta1 * st["m"] + (1 - beta1) * g
        if self.hp["capacity"] > 0:
            d = st["m"] + mean
            self._adam_update(i, st, d, d)  # v from d², as the released code does
        else:
            self._adam_update(i, st, st["m"], g)  # plain AdamW
        return st["m"]

    def _adam_cg(self, i, g, mean, first):
        p, st = self.params[i], self.state[i]
        wd, beta1 = self.hp["weight_decay"], self.hp["betas"][0]
        if first:
            st.update(m=torch.zeros_like(p), v=torch.zeros_like(p), t=0)
        g_tilde = g if first else g + mean
        if wd != 0:
            g_tilde = g_tilde + wd * p
        st["m"] = beta1 * st["m"] + (1 - beta1) * g_tilde
        self._adam_update(i, st, st["m"], g_tilde)
        return g

    def _sgd_cm(self, i, g, mean, first):
        p, st = self.params[i], self.state[i]
        lr, wd, mu, damp = self.hp["lr"], self.hp["weight_decay"], self.hp["momentum"], self.hp["dampening"]
        if wd != 0:
            g = g + wd * p
        if mu == 0:
            buf = g
        elif first:
            buf = st["buf"] = g.clone()
        else:
            buf = st["buf"] = mu * st["buf"] + (1 - damp) * g
        d = buf if first else buf + mean
        p -= lr * d
        return buf
