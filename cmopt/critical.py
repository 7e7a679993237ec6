"""The optimizer base class of Adam+CM, Adam+CG and SGD+CM, on the shape of torch/optim/adam.py.

The class validates hyperparameters, keeps the state (the critical buffer included, see
cmopt.buffer) and collects a group's tensors once per step (`_collect`, torch's `_init_group`); each optimizer's
arithmetic is one functional (`adam_cm`, `adam_cg`, `sgd_cm`) with a per-tensor and a multi-tensor
implementation, called by the subclass's `_update`. A step, per group: t <- t + 1 for each tensor
with a gradient; the functional moves the parameters, reading mean(B) before this step's insertion,
and offers its candidates (momenta or gradients) to the buffer; at the step's close the priority is
taken (by default s = Σ_i ||g_i||, over full tensors, also when sharded; `_priority`) and the buffer
admits, stores and decays.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.optim import Optimizer

from cmopt import _sharding, _validation as check
from cmopt import buffer as critical
from cmopt.buffer import CriticalBuffer

IMPLEMENTATION_CHOICES = ("foreach", "capturable", "buffer_dtype")
STATE_VERSION_KEY, STATE_VERSION = "cmopt_state_version", 2
OPTION_DEFAULTS = {"priority": "grad_norm", "variant": "paper"}  # what a group saved before the option has


class GroupTensors:
    """The tensors of one group that have a gradient this step, as the functionals take them: local
    shards (complex ones as real views), their state dicts, and their step counts after t <- t + 1."""

    def __init__(self, group: dict, params: list, grads: list, states: list[dict], first: list[bool], foreach: bool):
        self.full_params, self.full_grads, self.states, self.first = params, grads, states, first
        self.params = [_sharding.local(p) for p in params]
        self.grads = [_sharding.local(g) for g in grads]
        self.foreach = foreach
        if group["capturable"]:
            self.steps = [s["step"] for s in states]
            if self.steps:
                torch._foreach_add_(self.steps, 1)
        else:
            for s in states:
                s["step"] += 1
            self.steps = [s["step"] for s in states]

    def local(self, key: str, indices=None) -> list[torch.Tensor]:
        """State tensor `key` of each tensor (or of those at `indices`), as local tensors."""
        states = self.states if indices is None else [self.states[i] for i in indices]
        return [_sharding.local(s[key]) for s in states]

    def pick(self, name: str, indices) -> list:
        return [getattr(self, name)[i] for i in indices]


class CriticalOptimizer(Optimizer):
    """Base class. `priority_group`: the process group over which the priority is summed when each
    process holds only some of a group's tensors (ZeroRedundancyOptimizer); every process of it must
    step every group, holding tensors of it or not."""

    buffer_key = "critical_momenta"  # what the buffer stores

    def __init__(self, params, defaults: dict[str, Any], priority_group=None):
        check.hyperparameters(type(self).__name__, defaults)
        _refuse_unsummed_zero(type(self).__name__, priority_group)
        if priority_group is not None and defaults["capturable"]:
            raise ValueError(
                f"{type(self).__name__}: capturable=True with priority_group is not supported (the step under "
                f"ZeroRedundancyOptimizer reads on the host whether any process had a gradient). Use "
                f"capturable=False with priority_group."
            )
        self.priority_group = priority_group
        super().__init__(params, defaults)
        self.register_load_state_dict_pre_hook(CriticalOptimizer._before_load, prepend=True)
        self.register_load_state_dict_post_hook(CriticalOptimizer._after_load, prepend=True)
        self.register_state_dict_post_hook(CriticalOptimizer._after_state_dict, prepend=True)

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("priority_group", None)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("buffer_dtype", None)
            for key, default in OPTION_DEFAULTS.items():
                if key in self.defaults:
                    group.setdefault(key, default)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check.hyperparameters(type(self).__name__, param_group)
        super().add_param_group(param_group)

    # ---- what a subclass provides -------------------------------------------------------------

    def _init_tensor_state(self, group: dict, param: torch.Tensor, state: dict) -> None:
        """Create the subclass's own per-tensor state (moments, momentum buffer)."""
        raise NotImplementedError

    def _update(self, group: dict, tensors: GroupTensors, indices: list[int], buffer: CriticalBuffer | None,
                first: bool) -> None:
        """Run the optimizer's functional on the tensors at `indices`, all first steps or none."""
        raise NotImplementedError

    # ---- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        params, grads, states, first = [], [], [], []
        foreach = self._collect(group, params, grads, states, first)
        tensors = GroupTensors(group, params, grads, states, first, foreach)
        buffer = self._buffer(group, tensors) if group["capacity"] > 0 else None
        if buffer is None and not tensors.params:
            return
        for first in (True, False):
            indices = [i for i, f in enumerate(tensors.first) if f is first]
            if indices:
                self._update(group, tensors, indices, None if buffer is None else buffer.part(indices), first)
        if buffer is not None:
            buffer.close()

    def _collect(self, group: dict, params: list, grads: list, states: list, first: list) -> bool:
        """torch.optim's `_init_group`: collect the group's tensors that have a gradient (the lists are
        filled in place), creating the state of those that have none; returns `foreach`. (Not named
        `_init_group`: torch.compile runs a method of that name eagerly at trace time and expects its
        lists to hold only tensors it can find in `self.state`.)"""
        name = type(self).__name__
        for position, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            check.dense(name, position, p.grad)
            if group["capturable"] and _sharding.is_sharded(p):
                raise ValueError(
                    f"{name}: capturable=True is not supported on sharded (DTensor) parameters, as FSDP2 makes "
                    f"them (parameter {position} of its group). Use capturable=False: the default path steps "
                    f"on the shards with one host read per group and step."
                )
            state = self.state[p]
            fresh = len(state) == 0
            if fresh:
                state["step"] = _counter(0, group["capturable"], p)
                self._init_tensor_state(group, p, state)
            if group["capacity"] > 0:
                critical.init_tensor_state(state, self.buffer_key, p, group, _sharding.rows_like)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
            first.append(fresh)
        if group["capacity"] > 0 and params and not isinstance(group.get(critical.PRIORITIES), torch.Tensor):
            critical.init_group_state(group, self._device(group))
        # As torch does: multi-tensor kernels on accelerators; on the CPU the per-tensor loop is faster.
        return group["foreach"] if group["foreach"] is not None else self._device(group).type != "cpu"

    def _buffer(self, group: dict, tensors: GroupTensors) -> CriticalBuffer | None:
        """This step's view of the group's buffer, or None when no tensor of the group has a gradient
        (known here without communication; under ZeRO, decided when the priority is summed at `close`)."""
        if not tensors.params and self.priority_group is None:
            return None
        slots = tensors.local(critical.SLOTS) if group["capturable"] else None
        return critical.kind(group["capturable"])(
            group, tensors.local(self.buffer_key), tensors.local(critical.SUM),
            functools.partial(self._priority, group, tensors), tensors.foreach, slots)

    def _priority(self, group: dict, tensors: GroupTensors, positions: list[int],
                  candidates: list[torch.Tensor]) -> torch.Tensor | None:
        """What the group's priority rule measures, in float64 on the device: s = Σ_i ||g_i||_2 (the
        released code's "synced" priority, "grad_norm") or Σ_i ||X_i||_2 over the candidates offered
        ("candidate_norm"), over full tensors; nothing for the other rules (cmopt.buffer.rule_priority).
        None when no tensor has a gradient (on any process of `priority_group`)."""
        device = self._device(group)
        rule = group["priority"]
        if rule == "grad_norm":
            found = _sharding.norms(tensors.full_grads, tensors.foreach)
        elif rule == "candidate_norm":
            found = _sharding.norms([tensors.full_grads[i] for i in positions], tensors.foreach, values=candidates)
        else:
            found = []
        found = [n.to(device) for n in found]
        s = torch.stack(found).sum() if found else torch.zeros((), dtype=torch.float64, device=device)
        if self.priority_group is None:
            return s if tensors.params else None
        reduced = torch.stack([s, torch.tensor(float(len(tensors.params)), dtype=torch.float64, device=device)])
        _sharding.dist.all_reduce(reduced, group=self.priority_group)
        total, count = reduced.unbind()
        return total if float(count) > 0 else None  # a read on the host: some process may hold no tensor

    # ---- persistence ------------------------------------------------------------------------------

    @property
    def critical_buffers(self) -> list[BufferView | None]:
        """Per group: a read-only view of its buffer, or None before its first step (and with C = 0)."""
        return [BufferView(g, self.state, self.buffer_key) if isinstance(g.get(critical.PRIORITIES), torch.Tensor)
                and g["capacity"] > 0 else None for g in self.param_groups]

    @staticmethod
    def _after_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """The saved state: scratch slots left out, and the layout's version in each group."""
        for key, tensor_state in state_dict["state"].items():
            if critical.SLOTS in tensor_state:  # (torch's packed state holds the live dicts: not popped there)
                state_dict["state"][key] = {k: v for k, v in tensor_state.items() if k != critical.SLOTS}
        for group in state_dict["param_groups"]:
            group[STATE_VERSION_KEY] = STATE_VERSION
            group.pop("priority_group", None)  # ZeRO copies its constructor's arguments into every group
        return state_dict

    @staticmethod
    def _before_load(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        name = type(self).__name__
        for i, (group, saved) in enumerate(zip(self.param_groups, state_dict["param_groups"])):
            if "capacity" not in saved:
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} of the state dict has no 'capacity', so it "
                    f"was not saved by a critical-buffer optimizer. Load it into the optimizer that saved it."
                )
            if saved["capacity"] != group["capacity"]:
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} was saved with capacity={saved['capacity']} "
                    f"but this optimizer has capacity={group['capacity']}. Build the optimizer with "
                    f"capacity={saved['capacity']} to resume this state."
                )
        state_dict = _from_critical_buffers_layout(state_dict, self.buffer_key)
        # How to compute (not what): these follow this optimizer, so a state saved on one setup resumes on another.
        self._implementation = [{k: g[k] for k in IMPLEMENTATION_CHOICES} for g in self.param_groups]
        return state_dict

    @staticmethod
    def _after_load(self) -> None:
        """Put what torch's loading cast to the parameter's dtype back into the buffer's (and counters on
        this path's device), before any user post-hook runs."""
        for group, choices in zip(self.param_groups, self.__dict__.pop("_implementation")):
            group.update(choices)
            group.pop(STATE_VERSION_KEY, None)
            for key, default in OPTION_DEFAULTS.items():  # saved before these options existed: the paper's
                if key in self.defaults:
                    group.setdefault(key, default)
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                state["step"] = _counter(state["step"], group["capturable"], p)
                state.pop(critical.SLOTS, None)
                if group["capacity"] > 0 and self.buffer_key in state:
                    dtype = group["buffer_dtype"] or p.dtype
                    for key in (self.buffer_key, critical.SUM):
                        state[key] = state[key].to(dtype=dtype, device=p.device)
                    critical.init_tensor_state(state, self.buffer_key, p, group, _sharding.rows_like)
            if group["capacity"] > 0 and critical.PRIORITIES in group:
                critical.init_group_state(group, self._device(group))

    def __repr__(self) -> str:
        """torch's, without the buffer's priorities and counters (state, not hyperparameters)."""
        hidden = [{k: g.pop(k) for k in (*critical.GROUP_KEYS, STATE_VERSION_KEY) if k in g} for g in self.param_groups]
        try:
            return super().__repr__()
        finally:
            for group, kept in zip(self.param_groups, hidden):
                group.update(kept)

    def _device(self, group: dict) -> torch.device:
        """Where a group's buffer counters live: its tensors' device (a ZeRO process may hold none of them)."""
        for p in group["params"] or (q for g in self.param_groups for q in g["params"]):
            return _sharding.local(p).device
        return torch.device("cpu")


class BufferView:
    """Read-only view of one group's critical buffer: priorities, counters, rows and sums by position."""

    def __init__(self, group: dict, state, key: str):
        self.capacity = group["capacity"]
        self.priorities, self.steps = group[critical.PRIORITIES], group[critical.STEPS]
        self.admissions = group[critical.ADMISSIONS]
        held = [(i, state[p]) for i, p in enumerate(group["params"]) if key in state.get(p, {})]
        self.rows = {i: _sharding.local(s[key]) for i, s in held}
        self.sums = {i: _sharding.local(s[critical.SUM]) for i, s in held}

    def held_priorities(self) -> torch.Tensor:
        """The priorities of the entries held, in entry order (reads the counter on the host)."""
        return self.priorities[: min(int(self.steps), self.capacity)]

    def __repr__(self) -> str:
        return f"CriticalBuffer(capacity={self.capacity}, tensors={len(self.rows)}, steps={int(self.steps)})"


def _counter(value, capturable: bool, param: torch.Tensor):
    """A tensor's step count as the path needs it: a device tensor when capturable, else a Python int."""
    if capturable:
        dtype = torch.promote_types(param.dtype if param.is_floating_point() else torch.float32, torch.float32)
        return torch.as_tensor(value, dtype=dtype).to(_sharding.local(param).device).clone()
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


def _refuse_unsummed_zero(name: str, priority_group) -> None:
    """Inside ZeroRedundancyOptimizer each process holds some of a group's tensors, so a priority summed
    over them alone admits differently on each process: a different algorithm, silently. Refuse it."""
    if priority_group is not None or _sharding.dist is None:
        return
    import sys

    from torch.distributed.optim import ZeroRedundancyOptimizer

    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return
        if isinstance(frame.f_locals.get("self"), ZeroRedundancyOptimizer):
            raise ValueError(
                f"{name} inside ZeroRedundancyOptimizer needs priority_group: each process holds only some of "
                f"the tensors, so the critical priority must be summed over all processes. Pass "
                f"optimizer_class=functools.partial(cmopt.{name}, priority_group=torch.distributed.group.WORLD) "
                f"(the process group ZeRO partitions over) to ZeroRedundancyOptimizer."
            )
        frame = frame.f_back


def _from_critical_buffers_layout(state_dict: dict[str, Any], buffer_key: str) -> dict[str, Any]:
    """A state dict of the intermediate layout (one `critical_buffers` entry per group, rows keyed by the
    tensor's position) in today's layout (rows in each tensor's state, counters in its group); today's
    and 0.1.0's (the same layout, float32 priorities allowed) are returned as they are."""
    if "critical_buffers" not in state_dict:
        return state_dict
    state, groups = {k: dict(v) for k, v in state_dict["state"].items()}, []
    for saved, buffer in zip(state_dict["param_groups"], state_dict["critical_buffers"], strict=True):
        group = dict(saved)
        if buffer is not None:
            group.update({critical.PRIORITIES: buffer["priorities"], critical.STEPS: buffer["steps"],
                          critical.ADMISSIONS: buffer["admissions"]})
            for position, index in enumerate(group["params"]):
                if position in buffer["rows"]:
                    state.setdefault(index, {})[buffer_key] = buffer["rows"][position]
                    state[index][critical.SUM] = buffer["sums"][position]
        groups.append(group)
    return {"state": state, "param_groups": groups}
