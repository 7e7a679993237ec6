"""A plain per-step transcription of docs/optimizers.md in float64, sharing no code with cmopt.

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


class ReferenceBuffer:
    """The critical buffer of one group: a list of entries, the mean recomputed from them. With
    rule="fifo" the list is kept oldest first and a full buffer replaces its oldest entry."""

    def __init__(self, capacity: int, decay: float, rule: str = "grad_norm"):
        self.capacity, self.decay, self.rule = capacity, decay, rule
        self.entries: list[Entry] = []
        self.attempts = 0  # insertion attempts so far

    def insert(self, s: float, candidates: dict[int, torch.Tensor]) -> None:
        if self.capacity == 0:
            return
        self.attempts += 1
        if len(self.entries) < self.capacity:
            self.entries.append(Entry(s, candidates))
        elif self.rule == "fifo":
            oldest = self.entries.pop(0)
            oldest.priority = s
            oldest.stored.update(candidates)  # tensors without a gradient keep theirs
            self.entries.append(oldest)
        else:
            lowest = min(range(len(self.entries)), key=lambda j: (self.entries[j].priority, j))
            if s > self.entries[lowest].priority:
                self.entries[lowest].priority = s
                self.entries[lowest].stored.update(candidates)  # tensors without a gradient keep theirs
        for entry in self.entries:
            entry.priority *= self.decay

    def mean(self, i: int, like: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(like)
        if not self.entries:
            return zeros
        return sum((e.stored.get(i, zeros) for e in self.entries), zeros) / len(self.entries)

    def priorities(self) -> list[float]:
        return [e.priority for e in self.entries]


def priority(grads: list[torch.Tensor]) -> float:
    """s = Σ_i ||g_i||_2 over the tensors that have a gradient."""
    return sum(math.sqrt(float((g.double() ** 2).sum())) for g in grads)


def drawn_priority(attempts: int) -> float:
    """priority="random": docs/optimizers.md's hash of the number of earlier insertion attempts n,
    written with modular arithmetic: x = (n + 2654435769) mod 2^32, then twice
    x = ((x xor floor(x / 2^16)) · 73244475) mod 2^32, then x xor floor(x / 2^16), over 2^32."""
    x = (attempts + 2654435769) % 2**32
    for _ in range(2):
        x = ((x ^ (x // 2**16)) * 73244475) % 2**32
    return (x ^ (x // 2**16)) / 2**32


def rule_priority(rule: str, grads: list[torch.Tensor], candidates: list[torch.Tensor], attempts: int) -> float:
    if rule == "grad_norm":
        return priority(grads)
    if rule == "candidate_norm":
        return priority(candidates)
    if rule == "random":
        return drawn_priority(attempts)
    assert rule == "fifo"
    return float(attempts + 1)


class ReferenceGroup:
    def __init__(self, kind: str, params: list[torch.Tensor], **hp):
        self.kind, self.params, self.hp = kind, params, hp
        self.buffer = ReferenceBuffer(hp["capacity"], hp["decay"], hp.get("priority", "grad_norm"))
        self.state: dict[int, dict] = {}

    def step(self, grads: list[torch.Tensor | None]) -> None:
        active = [i for i, g in enumerate(grads) if g is not None]
        if not active:
            return
        candidates = {}
        for i in active:
            first = i not in self.state
            if first:
                self.state[i] = {}
            mean = self.buffer.mean(i, self.params[i])
            step = {"adam_cm": self._adam_cm, "adam_cg": self._adam_cg, "sgd_cm": self._sgd_cm}[self.kind]
            candidates[i] = step(i, grads[i], mean, first).clone()
        s = rule_priority(self.buffer.rule, [grads[i] for i in active], list(candidates.values()), self.buffer.attempts)
        self.buffer.insert(s, candidates)

    def priorities(self) -> list[float]:
        return self.buffer.priorities()

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
        if self.hp.get("variant", "paper") == "debiased":
            return self._adam_cm_debiased(i, g, mean, first)
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

    def _adam_cm_debiased(self, i, g, mean, first):
        """Ours: m̂ = m / (1 - β1^t) is stored from the first step; d = m̂ + mean(B), v from d²; the step
        lr · d / (√v̂ + ε) has no first-moment correction of its own (m̂ has it)."""
        p, st = self.params[i], self.state[i]
        lr, eps = self.hp["lr"], self.hp["eps"]
        beta1, beta2 = self.hp["betas"]
        if first:
            st.update(m=torch.zeros_like(p), v=torch.zeros_like(p), t=0)
        st["t"] += 1
        st["m"] = beta1 * st["m"] + (1 - beta1) * g
        m_hat = st["m"] / (1 - beta1 ** st["t"])
        d = m_hat + mean
        st["v"] = beta2 * st["v"] + (1 - beta2) * d**2
        p -= lr * d / (st["v"].sqrt() / math.sqrt(1 - beta2 ** st["t"]) + eps)
        return m_hat

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
