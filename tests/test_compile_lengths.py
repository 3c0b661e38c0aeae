"""Lengths are data under torch.compile (issue 15): fresh lengths every step compile at most twice.

Each op runs a loop of steps with fresh random lengths (same batch count) under
``torch.compile(fullgraph=True)``, with the lengths given as a list, a tuple or a 1-D tensor. A
tensor compiles once (it is a graph input); a list or tuple compiles twice: first with its values
as constants, then once more with them as symbols (torch's automatic dynamic shapes), which every
later step reuses. torch makes a list position symbolic when its value changes between two calls,
so the loops draw lengths that differ from the previous step's at every position (a position that
kept its value would stay a constant and recompile once when it changes: README, torch.compile).
Every step must match eager bit for bit.

Backends: ``CompileCounter`` runs the captured graph as is (dynamo's tracing and the fake kernels
are what is tested here, not inductor's code generation); the FA training loop counts through
``aot_eager`` so the backward is traced by AOTAutograd as well.
"""
import random

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter, CompileCounterWithBackend

import ascend_attn
from ascend_attn.testing.samples import compressed_mask

FORMS = ("list", "tuple", "tensor")
STEPS = 10
MAX_COMPILES = {"list": 2, "tuple": 2, "tensor": 1}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def given_as(form, values):
    return {"list": list, "tuple": tuple, "tensor": lambda x: torch.tensor(x, dtype=torch.int64)}[form](values)


def cumulative(lengths, leading_zero=False):
    out = [0] if leading_zero else []
    for n in lengths:
        out.append((out[-1] if out else 0) + n)
    return out


def assert_same(got, want):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert torch.equal(g, w)


def fresh(rng, previous, draw):
    """``draw(rng)`` until the list differs from ``previous`` at every position."""
    while True:
        values = draw(rng)
        if previous is None or all(a != b for a, b in zip(values, previous)):
            return values


def random_lengths(rng, batch, low, high):
    return [rng.randint(low, high) for _ in range(batch)]


def forward_loop(attend, next_lengths, inputs, given, form):
    """STEPS calls ``attend(*inputs, lengths, lengths)`` with fresh lengths (``next_lengths(previous)``,
    passed as ``given(form, lengths)``) under fullgraph: every step equals eager bit for bit."""
    counter = CompileCounter()
    compiled = torch.compile(attend, backend=counter, fullgraph=True)
    lengths = None
    for _ in range(STEPS):
        lengths = next_lengths(lengths)
        assert_same(compiled(*inputs, given(form, lengths), given(form, lengths)), attend(*inputs, lengths, lengths))
    assert counter.frame_count <= MAX_COMPILES[form]


def training_loop(loss_of, next_lengths, inputs, given, form):
    """STEPS training steps ``loss_of(*inputs(step), lengths, lengths).backward()`` with fresh lengths
    (``next_lengths(previous)``, passed as ``given(form, lengths)``) under aot_eager and fullgraph: loss
    and gradients equal eager's bit for bit (same dropout seed: torch.manual_seed before each call)."""
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_of, backend=counter, fullgraph=True)
    lengths = None
    for step in range(STEPS):
        lengths = next_lengths(lengths)
        eager_in, comp_in = inputs(step), inputs(step)
        torch.manual_seed(step)
        want = loss_of(*eager_in, lengths, lengths)
        want.backward()
        torch.manual_seed(step)
        got = compiled(*comp_in, given(form, lengths), given(form, lengths))
        got.backward()
        assert torch.equal(got, want)
        for a, b in zip(comp_in, eager_in):
            assert torch.equal(a.grad, b.grad)
    assert counter.frame_count <= MAX_COMPILES[form]


# ----------------------------------------------------------------------------- FlashAttention

FA_BATCH, FA_MAX, FA_HEADS, FA_DIM = 3, 6, 2, 16
FA_KW = dict(scale_value=FA_DIM ** -0.5, sparse_mode=3, atten_mask=compressed_mask(3))


def fa_lengths(rng):
    return cumulative(random_lengths(rng, FA_BATCH, 1, FA_MAX))


def fa_inputs(seed, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    t = FA_BATCH * FA_MAX
    return [torch.randn(t, FA_HEADS, FA_DIM, generator=gen).requires_grad_(requires_grad) for _ in range(3)]


@pytest.mark.parametrize("form", FORMS)
def test_flash_attention_forward_fresh_lengths(form):
    def attend(q, k, v, seq_q, seq_kv):
        return ascend_attn.flash_attention_varlen_score(q, k, v, FA_HEADS, seq_q, seq_kv, **FA_KW)

    rng = random.Random(1)
    forward_loop(attend, lambda seq: fresh(rng, seq, fa_lengths), fa_inputs(0), given_as, form)


@pytest.mark.parametrize("form", ["list", "tensor"])  # a tuple takes the list's path (forward test)
def test_flash_attention_training_fresh_lengths(form):
    def loss_of(q, k, v, seq_q, seq_kv):
        out = ascend_attn.flash_attention_varlen_score(q, k, v, FA_HEADS, seq_q, seq_kv, **FA_KW)[0]
        return (out * out).sum()

    rng = random.Random(2)
    training_loop(loss_of, lambda seq: fresh(rng, seq, fa_lengths), lambda step: fa_inputs(step, True),
                  given_as, form)


# ----------------------------------------------------------------------------- IncreFlashAttention

IFA_BATCH, IFA_CACHE, IFA_HEADS, IFA_DIM = 2, 24, 2, 16


@pytest.mark.parametrize("form", FORMS)
def test_incre_flash_attention_decode_growing_lengths(form):
    def decode(q, k, v, lengths):
        return ascend_attn.incre_flash_attention(q, k, v, actual_seq_lengths=lengths, num_heads=IFA_HEADS,
                                                 input_layout="BSH", scale_value=IFA_DIM ** -0.5)

    counter = CompileCounter()
    compiled = torch.compile(decode, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(3)
    k, v = (torch.randn(IFA_BATCH, IFA_CACHE, IFA_HEADS * IFA_DIM, generator=gen).half() for _ in range(2))
    lengths = [3, 9]
    for _ in range(STEPS):
        q = torch.randn(IFA_BATCH, 1, IFA_HEADS * IFA_DIM, generator=gen).half()
        assert_same(compiled(q, k, v, given_as(form, lengths)), decode(q, k, v, lengths))
        lengths = [n + 1 for n in lengths]
    assert counter.frame_count <= MAX_COMPILES[form]


# ----------------------------------------------------------------------------- RingAttentionUpdate

RAU_BATCH, RAU_TOKENS, RAU_HEADS, RAU_DIM = 3, 12, 2, 64


@pytest.mark.parametrize("form", FORMS)
def test_ring_attention_update_fresh_lengths(form):
    def merge(tensors, seq):
        return ascend_attn.ring_attention_update(*tensors, seq, "TND", "")

    counter = CompileCounter()
    compiled = torch.compile(merge, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(4)
    rng = random.Random(4)
    seq = None
    for _ in range(STEPS):
        # cumulative with a leading 0, ending at T (those two stay constants)
        cuts = fresh(rng, None if seq is None else seq[1:-1],
                     lambda r: sorted(r.randint(0, RAU_TOKENS) for _ in range(RAU_BATCH - 1)))
        seq = [0] + cuts + [RAU_TOKENS]
        attn = [torch.randn(RAU_TOKENS, RAU_HEADS, RAU_DIM, generator=gen) for _ in range(2)]
        stats = [torch.randn(RAU_TOKENS, RAU_HEADS, 8, generator=gen) for _ in range(2)]
        sums = [torch.rand(RAU_TOKENS, RAU_HEADS, 8, generator=gen) + 1 for _ in range(2)]
        tensors = (attn[0], stats[0], sums[0], attn[1], stats[1], sums[1])
        assert_same(compiled(tensors, given_as(form, seq)), merge(tensors, seq))
    assert counter.frame_count <= MAX_COMPILES[form]


# ----------------------------------------------------------------------------- SelfAttention

SA_BATCH, SA_MAX, SA_HEADS, SA_DIM, SA_LAYERS = 3, 5, 2, 16, 2


@pytest.mark.parametrize("form", FORMS)
def test_self_attention_prefill_fresh_lengths(form):
    def prefill(q, k, v, seq_len):
        return ascend_attn.self_attention(q, k, v, seq_len=seq_len, head_num=SA_HEADS, qk_scale=SA_DIM ** -0.5,
                                          calc_type="PA_ENCODER")

    counter = CompileCounter()
    compiled = torch.compile(prefill, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(5)
    rng = random.Random(5)
    tokens = SA_BATCH * SA_MAX
    seq_len = None
    for _ in range(STEPS):
        seq_len = fresh(rng, seq_len, lambda r: random_lengths(r, SA_BATCH, 0, SA_MAX))
        q, k, v = (torch.randn(tokens, SA_HEADS, SA_DIM, generator=gen).half() for _ in range(3))
        assert_same(compiled(q, k, v, given_as(form, seq_len)), prefill(q, k, v, seq_len))
    assert counter.frame_count <= MAX_COMPILES[form]


@pytest.mark.parametrize("form", FORMS)
def test_self_attention_decode_growing_offsets(form):
    """DECODER with a KV cache: every step writes one row per batch at token_offset - 1 (in place)."""
    def decode(q, k, v, cache_k, cache_v, seq_len, token_offset):
        return ascend_attn.self_attention(q, k, v, cache_k, cache_v, seq_len=seq_len, token_offset=token_offset,
                                          layer_id=[1], head_num=SA_HEADS, qk_scale=SA_DIM ** -0.5,
                                          calc_type="DECODER")

    counter = CompileCounter()
    compiled = torch.compile(decode, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(6)
    max_seq = 16
    cache = torch.randn(SA_LAYERS, SA_BATCH, max_seq, SA_HEADS * SA_DIM, generator=gen).half()
    eager_caches, comp_caches = (cache.clone(), cache.clone()), (cache.clone(), cache.clone())
    offsets = [2, 5, 3]
    for _ in range(STEPS):
        q, k, v = (torch.randn(SA_BATCH, SA_HEADS * SA_DIM, generator=gen).half() for _ in range(3))
        ones = [1] * SA_BATCH
        got = compiled(q, k, v, *comp_caches, given_as(form, ones), given_as(form, offsets))
        assert_same(got, decode(q, k, v, *eager_caches, ones, offsets))
        offsets = [n + 1 for n in offsets]
    for a, b in zip(comp_caches, eager_caches):
        assert torch.equal(a, b)
    assert counter.frame_count <= MAX_COMPILES[form]


# ----------------------------------------------------------------------------- flash-attn layer

KV_BATCH, KV_CACHE, KV_HEADS, KV_DIM = 2, 24, 2, 16


@pytest.mark.parametrize("form", FORMS)
def test_flash_attn_with_kvcache_decode_growing_lengths(form):
    """Decode with an in-place cache append: the new k / v go to row cache_seqlens[b] of each cache."""
    def decode(q, k_cache, v_cache, k, v, cache_seqlens):
        return ascend_attn.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=cache_seqlens,
                                                   causal=True)

    counter = CompileCounter()
    compiled = torch.compile(decode, backend=counter, fullgraph=True)
    gen = torch.Generator().manual_seed(7)
    cache = [torch.randn(KV_BATCH, KV_CACHE, KV_HEADS, KV_DIM, generator=gen).half() for _ in range(2)]
    eager_caches, comp_caches = [c.clone() for c in cache], [c.clone() for c in cache]
    lengths = [3, 8]
    for _ in range(STEPS):
        q, k, v = (torch.randn(KV_BATCH, 1, KV_HEADS, KV_DIM, generator=gen).half() for _ in range(3))
        got = compiled(q, *comp_caches, k, v, given_as(form, lengths))
        assert_same(got, decode(q, *eager_caches, k, v, lengths))
        lengths = [n + 1 for n in lengths]
    for a, b in zip(comp_caches, eager_caches):
        assert torch.equal(a, b)
    assert counter.frame_count <= MAX_COMPILES[form]


# ----------------------------------------------------------------------------- flash_attn_varlen_func

VL_BATCH, VL_MAX, VL_HEADS, VL_KV_HEADS, VL_DIM = 3, 6, 4, 2, 16
# (causal, window, dropout, ALiBi, softcap): a causal and a windowed block plan with GQA; dropout (the
# seed is drawn outside the op: torch.manual_seed before each call repeats it), ALiBi and softcap
VL_OPTIONS = {"causal": dict(causal=True),
              "window_dropout_alibi": dict(window_size=(2, 1), dropout_p=0.25,
                                           alibi_slopes=torch.tensor([0.5, 0.25, 0.125, 0.0625])),
              "softcap_dropout": dict(causal=True, softcap=5.0, dropout_p=0.25)}


def varlen_cu(rng, previous):
    """Fresh cumulative lengths with the leading 0 (the entries after it all differ from ``previous``);
    flash-attn users pass them as int32 tensors."""
    cuts = fresh(rng, None if previous is None else previous[1:],
                 lambda r: cumulative(random_lengths(r, VL_BATCH, 1, VL_MAX)))
    return [0] + cuts


def given_as_cu(form, values):
    return torch.tensor(values, dtype=torch.int32) if form == "tensor" else given_as(form, values)


def varlen_inputs(seed, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    t = VL_BATCH * VL_MAX
    shapes = ((t, VL_HEADS, VL_DIM), (t, VL_KV_HEADS, VL_DIM), (t, VL_KV_HEADS, VL_DIM))
    return [torch.randn(s, generator=gen).requires_grad_(requires_grad) for s in shapes]


@pytest.mark.parametrize("form", FORMS)
def test_flash_attn_varlen_forward_fresh_lengths(form):
    def attend(q, k, v, cu_q, cu_k):
        return ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, VL_MAX, VL_MAX, causal=True,
                                                  return_attn_probs=True)[:2]

    rng = random.Random(8)
    forward_loop(attend, lambda cu: varlen_cu(rng, cu), varlen_inputs(8), given_as_cu, form)


# every option set with tensors (what flash-attn users pass); a list once (a tuple takes its path)
@pytest.mark.parametrize("form,options", [("tensor", o) for o in VL_OPTIONS] + [("list", "causal")])
def test_flash_attn_varlen_training_fresh_lengths(form, options):
    kw = VL_OPTIONS[options]

    def loss_of(q, k, v, cu_q, cu_k):
        out = ascend_attn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, VL_MAX, VL_MAX, **kw)
        return (out * out).sum()

    rng = random.Random(9)
    training_loop(loss_of, lambda cu: varlen_cu(rng, cu), lambda step: varlen_inputs(step, True), given_as_cu, form)


def test_flash_attn_qkvpacked_training_compiles_once():
    """The batched and packed forms call the same op (equal lengths): one graph, eager's bits."""
    def loss_of(qkv):
        return ascend_attn.flash_attn_qkvpacked_func(qkv, causal=True).square().sum()

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_of, backend=counter, fullgraph=True)
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        eager_in = torch.randn(2, 5, 3, VL_HEADS, VL_DIM, generator=gen).requires_grad_()
        comp_in = eager_in.detach().clone().requires_grad_()
        want, got = loss_of(eager_in), compiled(comp_in)
        want.backward()
        got.backward()
        assert torch.equal(got, want) and torch.equal(comp_in.grad, eager_in.grad)
    assert counter.frame_count == 1


def test_flash_attn_varlen_errors_read_the_same_compiled():
    """Value checks of cu_seqlens run in the real kernel: the compiled call raises eager's message."""
    def attend(q, k, v, cu):
        return ascend_attn.flash_attn_varlen_func(q, k, v, cu, cu, VL_MAX, VL_MAX)

    compiled = torch.compile(attend, backend=CompileCounter(), fullgraph=True)
    q, k, v = varlen_inputs(10)
    for bad, arg in (([0, 4, 3, 9], "cu_seqlens_q"), ([0, 4, 9, VL_BATCH * VL_MAX + 1], "cu_seqlens_q"),
                     ([0, 1, 2, 2 + VL_MAX + 1], "max_seqlen_q")):
        cu = torch.tensor(bad, dtype=torch.int32)
        with pytest.raises(ValueError, match=f"^flash_attn_varlen_func: {arg} only supports") as eager:
            attend(q, k, v, cu)
        with pytest.raises(ValueError) as comp:
            compiled(q, k, v, cu)
        assert str(comp.value) == str(eager.value)
