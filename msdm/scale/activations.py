"""Activation memory of a training forward: the bytes autograd keeps for backward, counted with saved-tensor hooks.

Every tensor an op saves for backward passes through ``torch.autograd.graph.saved_tensors_hooks``; counting the
distinct *storages* behind them (a view keeps its whole storage alive; parameters are weights, not activations)
gives the activation memory of a step exactly as autograd holds it. On the meta device the same forward runs with
shapes only: any resolution and sequence length, no memory, no arithmetic — so a CPU measures what a GPU will hold.

Two GPU behaviours are emulated, because the CPU (and meta) kernels differ from the CUDA ones:

- **Flash / memory-efficient attention.** On CUDA, ``scaled_dot_product_attention`` keeps ``q, k, v``, the output
  and a float32 log-sum-exp per query (plus the mask, if any) — never the ``L × L`` weights that the meta/CPU math
  path saves. :class:`FlashSDPA` stands in for it with exactly those saved tensors (and a correct backward).
- **Autocast** (``precision: bf16-mixed`` / ``16-mixed``): CUDA autocast runs matmuls and convolutions in the half
  type and norms / softmax in float32 (torch's autocast op lists), and the half copies of trainable fp32 weights are
  saved for backward. :func:`gpu_emulation` casts the arguments of those ops the same way (autocast cannot be
  enabled without a CUDA device).

Gradient checkpointing: diffusers models call ``_gradient_checkpointing_func(module, *args)`` per block;
:class:`ActivationCounter` installs one that records the block's inputs (what checkpointing keeps) and the bytes the
block saves when it runs whole (what its recomputation holds during backward), then checkpoints it for real.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# ------------------------------------------------------------------------------------------------------------------
# Flash-attention stand-in
# ------------------------------------------------------------------------------------------------------------------

_SDPA = F.scaled_dot_product_attention


class FlashSDPA(torch.autograd.Function):
    """``scaled_dot_product_attention`` that saves what CUDA's flash / memory-efficient kernels save: ``q, k, v``,
    the output, a float32 log-sum-exp ``[..., L_q]`` and the mask. Backward recomputes through the math path."""

    @staticmethod
    def forward(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        with torch.no_grad():
            out = _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa)
            if out.dim() == 4:
                # The CUDA kernels (and CPU flash) write [B, L, H, D] and return a [B, H, L, D] view of it, so the
                # usual transpose(1, 2).reshape back to [B, L, H·D] is a view, not a copy; the math path (meta)
                # returns a contiguous [B, H, L, D]. Use the kernels' layout.
                out = out.transpose(1, 2).contiguous().transpose(1, 2)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse, attn_mask)
        ctx.opts = (dropout_p, is_causal, scale, enable_gqa)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, _, _, attn_mask = ctx.saved_tensors
        dropout_p, is_causal, scale, enable_gqa = ctx.opts
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
            out = _SDPA(*leaves, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa)
            wrt = [t for t in leaves if t.requires_grad]
            grads = iter(torch.autograd.grad(out, wrt, grad_out) if wrt else ())
        return (*(next(grads) if t.requires_grad else None for t in leaves), None, None, None, None, None)


def flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return FlashSDPA.apply(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


# ------------------------------------------------------------------------------------------------------------------
# Autocast emulation (torch.amp op lists for CUDA)
# ------------------------------------------------------------------------------------------------------------------

# Ops autocast runs in the half type ("CUDA ops that can autocast to float16" in torch.amp's docs).
_HALF_OPS = {
    F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
    torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm,
    torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm, torch.addbmm, torch.mv, torch.prelu,
    torch.conv1d, torch.conv2d, torch.conv3d, torch.einsum,
}
# Ops autocast runs in float32 ("CUDA ops that can autocast to float32").
_FLOAT_OPS = {
    F.layer_norm, F.group_norm, F.softmax, F.log_softmax, torch.softmax, torch.Tensor.softmax, torch.log_softmax,
    torch.Tensor.log_softmax, F.mse_loss, F.l1_loss, F.normalize, torch.layer_norm, torch.group_norm,
}


def _cast(x, dtype):
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(y, dtype) for y in x)
    return x


class gpu_emulation(TorchFunctionMode):
    """Run a forward as a CUDA training step would: flash-style attention, and autocast to ``autocast_dtype``
    (``None`` = no autocast, e.g. ``precision: 32-true``)."""

    def __init__(self, autocast_dtype: torch.dtype | None = None, flash_attention: bool = True):
        super().__init__()
        self.autocast_dtype = autocast_dtype
        self.flash_attention = flash_attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        half = self.autocast_dtype
        if func is _SDPA:
            if half is not None:  # q, k, v and a float mask go to the half type; a boolean mask stays as it is
                args, kwargs = _cast(args, half), {k: _cast(v, half) for k, v in kwargs.items()}
            return flash_sdpa(*args, **kwargs) if self.flash_attention else func(*args, **kwargs)
        if half is not None:
            if func in _HALF_OPS:
                args, kwargs = _cast(args, half), {k: _cast(v, half) for k, v in kwargs.items()}
            elif func in _FLOAT_OPS:
                args, kwargs = _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        return func(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------------------------------------------


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class _Storages:
    """Distinct storages behind saved tensors, keyed by their address; a storage counts while any tensor saved from
    it is alive (weak references: a node freed during the forward frees what it saved, and its address may then be
    reused by a new storage, which must count again)."""

    def __init__(self):
        self.entries: dict[int, tuple[int, list]] = {}

    def alive(self, k: int) -> bool:
        e = self.entries.get(k)
        return e is not None and any(r() is not None for r in e[1])

    def add(self, k: int, t: torch.Tensor) -> None:
        if not self.alive(k):
            self.entries[k] = (t.untyped_storage().nbytes(), [])
        self.entries[k][1].append(weakref.ref(t))

    def bytes(self) -> int:
        return sum(n for k, (n, _) in self.entries.items() if self.alive(k))


@dataclass
class ActivationCount:
    """``saved``: bytes of distinct storages kept for backward during the forward (with checkpointing: what the
    non-checkpointed ops save plus the checkpointed blocks' inputs); ``recompute``: the largest checkpointed block's
    own saved bytes (held once more while that block is recomputed in backward; 0 without checkpointing);
    ``units``: checkpointed blocks run."""

    saved: int
    recompute: int = 0
    units: int = 0

    @property
    def peak(self) -> int:
        return self.saved + self.recompute


class ActivationCounter:
    """Count the bytes ``model``'s forward keeps for backward.

    Use as ``with ActivationCounter(model) as c: loss = run()`` then read ``c.result()``; keep the output alive
    until then (its graph holds the saved tensors). With ``checkpointing=True`` the model's gradient checkpointing
    is turned on with a counting function (diffusers' ``enable_gradient_checkpointing(gradient_checkpointing_func=)``).
    """

    def __init__(self, model: torch.nn.Module, checkpointing: bool = False):
        self.model = model
        self.checkpointing = checkpointing
        self.exclude = {_key(t) for t in list(model.parameters()) + list(model.buffers())}
        self.seen = _Storages()
        self.unit_max = 0
        self.units = 0
        self._unit: _Storages | None = None

    def _pack(self, t: torch.Tensor):
        k = _key(t)
        if k not in self.exclude:
            if self._unit is None:
                self.seen.add(k, t)
            elif not self.seen.alive(k):  # a block's own tensors, beyond what is held already
                self._unit.add(k, t)
        return t

    def _checkpoint(self, module, *args):
        # What checkpointing keeps: the block's tensor inputs. What recomputing it holds: everything it saves.
        for a in args:
            if isinstance(a, torch.Tensor):
                self._pack(a)
        self._unit = _Storages()
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                out = module(*args)
            self.unit_max = max(self.unit_max, self._unit.bytes())
            del out
        finally:
            self._unit = None
        self.units += 1
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    def __enter__(self):
        if self.checkpointing:
            self.model.enable_gradient_checkpointing(gradient_checkpointing_func=self._checkpoint)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        if self.checkpointing:
            self.model.disable_gradient_checkpointing()

    def result(self) -> ActivationCount:
        return ActivationCount(saved=self.seen.bytes(), recompute=self.unit_max, units=self.units)


def count_activations(model: torch.nn.Module, run, checkpointing: bool = False,
                      autocast_dtype: torch.dtype | None = None, flash_attention: bool = True) -> ActivationCount:
    """Activation bytes of ``run()`` (a closure calling ``model``'s forward) under :class:`gpu_emulation`."""
    with contextlib.ExitStack() as stack:
        counter = stack.enter_context(ActivationCounter(model, checkpointing))
        stack.enter_context(gpu_emulation(autocast_dtype, flash_attention))
        out = run()
        result = counter.result()
        del out
    return result
