"""MindSpore FlashAttention V4 frontend: PyNative and GRAPH_MODE give the torch op's numbers
(forward and gradients, bit for bit), non-TND layouts map onto TND, training works, and the
documented constraints raise in every mode without touching the inputs."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")
from mindspore import nn, ops  # noqa: E402

import ascend_attn  # noqa: E402
from ascend_attn import mindspore as ams  # noqa: E402
from ascend_attn.testing.samples import compressed_mask, fa_case  # noqa: E402
from frontends import as_numpy  # noqa: E402

DTYPES = ["float32", "float16", "bfloat16"]
# name -> fa_case keyword arguments. GQA N1=4, N2=2; lengths (5, 3, 7) / (6, 3, 9) and one tail row.
CASES = {
    "causal": dict(sparse_mode=3),
    "causal_tnd_stats": dict(sparse_mode=3, softmax_layout="same_as_input"),
    "dropout_mask": dict(sparse_mode=0, dropout=True),
    "alibi": dict(sparse_mode=2, pse_type=2, softmax_layout="same_as_input"),
}
KW_TO_PRIM = {"pse": "real_shift", "atten_mask": "attn_mask"}
ATTRS = ("scale_value", "keep_prob", "pre_tokens", "next_tokens", "inner_precise", "sparse_mode", "pse_type")


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def to_ms(t):
    """torch tensor -> MindSpore tensor of the same dtype (bf16 through float32, exact)."""
    if t.dtype == torch.bfloat16:
        return ms.Tensor(t.float().numpy()).astype(ms.bfloat16)
    return ms.Tensor(t.detach().numpy())


def case(name, dtype, seed=0):
    return fa_case(dtype, seed=seed, **CASES[name])


def prim_parts(args, kw):
    """(primitive constructor kwargs, call kwargs) of an fa_case."""
    q, k, v, head_num, seq_q, seq_kv = args
    attrs = {a: kw[a] for a in ATTRS if a in kw}
    attrs["softmax_out_layout"] = kw.get("softmax_out_layout", "")
    call = {KW_TO_PRIM.get(n, n): to_ms(t) for n, t in kw.items() if n in ("pse", "drop_mask", "atten_mask")}
    call.update({n: kw[n] for n in ("prefix", "q_start_idx", "kv_start_idx") if n in kw})
    call.update(actual_seq_qlen=seq_q, actual_seq_kvlen=seq_kv)
    return head_num, attrs, call


def assert_same(got, want):
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_array_equal(as_numpy(g), as_numpy(w))


# ----------------------------------------------------------------------------- (a) forward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_pynative_primitive_forward_equals_torch(name, dtype, pynative):
    args, kw = case(name, dtype)
    want = ascend_attn.flash_attention_varlen_score(*args, **kw)
    head_num, attrs, call = prim_parts(args, kw)
    got = ams.FlashAttentionVarLenScoreV4(head_num, **attrs)(*(to_ms(t) for t in args[:3]), **call)
    assert got[0].dtype == getattr(ms, dtype) and got[1].dtype == ms.float32
    assert_same(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["causal", "causal_tnd_stats", "dropout_mask"])
def test_pynative_functional_forward_equals_torch(name, dtype, pynative):
    args, kw = case(name, dtype, seed=1)
    want = ascend_attn.flash_attention_varlen_score(*args, **kw)
    q, k, v, head_num, seq_q, seq_kv = args
    got = ams.flash_attention_score(
        to_ms(q), to_ms(k), to_ms(v), head_num, drop_mask=to_ms(kw["drop_mask"]) if "drop_mask" in kw else None,
        attn_mask=to_ms(kw["atten_mask"]), actual_seq_qlen=ms.Tensor(np.array(seq_q, np.int64)),
        actual_seq_kvlen=tuple(seq_kv), keep_prob=kw.get("keep_prob", 1.0), scalar_value=kw["scale_value"],
        pre_tokens=kw["pre_tokens"], next_tokens=kw["next_tokens"], input_layout="TND",
        sparse_mode=kw["sparse_mode"], softmax_out_layout=kw["softmax_out_layout"])
    assert_same(got, want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_pynative_grad_primitive_equals_torch(dtype, pynative):
    args, kw = case("dropout_mask", dtype, seed=2)
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(*args, **kw)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    q, k, v, head_num, seq_q, seq_kv = args
    want = ascend_attn.flash_attention_unpadding_score_grad(
        q, k, v, dy, head_num, seq_q, seq_kv, smax, ssum, out, drop_mask=kw["drop_mask"], atten_mask=kw["atten_mask"],
        **{a: kw[a] for a in ATTRS if a in kw})
    grad = ams.FlashAttentionUnpaddingScoreGradV4(head_num, **{a: kw[a] for a in ATTRS if a in kw})
    got = grad(to_ms(q), to_ms(k), to_ms(v), to_ms(dy), drop_mask=to_ms(kw["drop_mask"]),
               atten_mask=to_ms(kw["atten_mask"]), softmax_max=to_ms(smax), softmax_sum=to_ms(ssum),
               attention_in=to_ms(out), actual_seq_qlen=seq_q, actual_seq_kvlen=seq_kv)
    assert got[3].shape == (0,) and want[3].shape == (0,)
    assert_same(got[:3], want[:3])


# ----------------------------------------------------------------------------- (b) gradients

class PrimLoss(nn.Cell):
    """sum(out * w) through the primitive: d out = w."""

    def __init__(self, prim, call, weight):
        super().__init__()
        self.prim, self.call, self.weight = prim, call, weight

    def construct(self, q, k, v):
        c = self.call
        out, _, _ = self.prim(q, k, v, c.get("real_shift"), c.get("drop_mask"), None, c.get("attn_mask"), None,
                              c["actual_seq_qlen"], c["actual_seq_kvlen"], c.get("q_start_idx"),
                              c.get("kv_start_idx"))
        return (ops.cast(out, ms.float32) * self.weight).sum()


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("name,dtype", [("causal", "float32"), ("dropout_mask", "float16"), ("alibi", "bfloat16")])
def test_grad_equals_torch_autograd(name, dtype, mode):
    args, kw = case(name, dtype, seed=4)
    # Weights exact in fp16 and bf16, so both frameworks see the same d out.
    weight = np.round(np.random.default_rng(5).standard_normal(tuple(args[0].shape)) * 8) / 8
    tq, tk, tv = (t.detach().clone().requires_grad_() for t in args[:3])
    out = ascend_attn.flash_attention_varlen_score(tq, tk, tv, *args[3:], **kw)[0]
    (out.float() * torch.from_numpy(weight).float()).sum().backward()

    head_num, attrs, call = prim_parts(args, kw)
    call = {n: (tuple(v) if isinstance(v, list) else v) for n, v in call.items()}
    net = PrimLoss(ams.FlashAttentionVarLenScoreV4(head_num, **attrs), call, ms.Tensor(weight.astype(np.float32)))
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        grads = ms.grad(net, grad_position=(0, 1, 2))(*(to_ms(t) for t in args[:3]))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert grads[0].dtype == getattr(ms, dtype)
    assert_same(grads, (tq.grad, tk.grad, tv.grad))


# ----------------------------------------------------------------------------- (c) training

class TinyAttentionNet(nn.Cell):
    """Packed tokens -> Dense q/k/v -> causal varlen attention (functional form) -> Dense head."""

    def __init__(self, seq_lens, embed=16, heads=2, head_dim=8, out_dim=4):
        super().__init__()
        self.qkv = nn.Dense(embed, 3 * heads * head_dim)
        self.head = nn.Dense(heads * head_dim, out_dim)
        self.heads, self.head_dim = heads, head_dim
        self.cum = tuple(int(x) for x in np.cumsum(seq_lens))
        self.mask = ms.Tensor(compressed_mask(3).numpy())

    def construct(self, x):
        t = x.shape[0]
        q, k, v = ops.split(self.qkv(x), self.heads * self.head_dim, axis=-1)
        shape = (t, self.heads, self.head_dim)
        out, _, _ = ams.flash_attention_score(q.reshape(shape), k.reshape(shape), v.reshape(shape), self.heads,
                                              attn_mask=self.mask, actual_seq_qlen=self.cum,
                                              actual_seq_kvlen=self.cum, scalar_value=self.head_dim ** -0.5,
                                              input_layout="TND", sparse_mode=3)
        return self.head(out.reshape(t, -1))


def test_graph_mode_training_reduces_loss():
    ms.set_seed(0)
    rng = np.random.default_rng(6)
    x = ms.Tensor(rng.standard_normal((12, 16)).astype(np.float32))
    y = ms.Tensor(rng.standard_normal((12, 4)).astype(np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = TinyAttentionNet((5, 7))
        step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 1e-2))
        losses = [float(step(x, y).asnumpy()) for _ in range(10)]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


# ----------------------------------------------------------------------------- (d) non-TND layouts

B, S1, S2, N1, N2, D = 2, 5, 7, 4, 2, 16


def to_layout(x, layout):
    """[B, S, N, D] torch -> the layout."""
    b, s, n, d = x.shape
    return {"BSH": x.reshape(b, s, n * d), "SBH": x.reshape(b, s, n * d).transpose(0, 1), "BSND": x,
            "BNSD": x.transpose(1, 2)}[layout].contiguous()


def non_tnd_case(mask_kind, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, s, n, D, generator=gen) for s, n in ((S1, N1), (S2, N2), (S2, N2)))
    ms_kw, torch_kw = {}, {}
    if mask_kind == "causal":
        ms_kw = dict(attn_mask=to_ms(compressed_mask(3)), sparse_mode=3)
        torch_kw = dict(atten_mask=compressed_mask(3), sparse_mode=3)
    elif mask_kind == "shared":  # [1, 1, S1, S2] -> [S1, S2]
        mask = torch.rand(S1, S2, generator=gen) < 0.3
        ms_kw, torch_kw = dict(attn_mask=to_ms(mask.view(1, 1, S1, S2))), dict(atten_mask=mask)
    elif mask_kind == "per_batch":  # [B, 1, S1, S2] -> block-diagonal [T1, T2]
        mask = torch.rand(B, 1, S1, S2, generator=gen) < 0.3
        full = torch.ones(B * S1, B * S2, dtype=torch.bool)
        for b in range(B):
            full[b * S1:(b + 1) * S1, b * S2:(b + 1) * S2] = mask[b, 0]
        ms_kw, torch_kw = dict(attn_mask=to_ms(mask)), dict(atten_mask=full)
    return (q, k, v), ms_kw, torch_kw


def torch_tnd(qkv, torch_kw, requires_grad=False):
    q, k, v = (x.reshape(-1, x.shape[2], D) for x in qkv)
    return ascend_attn.flash_attention_varlen_score(
        q, k, v, N1, [S1 * (b + 1) for b in range(B)], [S2 * (b + 1) for b in range(B)], scale_value=0.25,
        **torch_kw)


@pytest.mark.parametrize("mask_kind", [None, "causal", "shared", "per_batch"])
@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
def test_pynative_non_tnd_layout_equals_tnd(layout, mask_kind, pynative):
    qkv, ms_kw, torch_kw = non_tnd_case(mask_kind, seed=7)
    got = ams.flash_attention_score(*(to_ms(to_layout(x, layout)) for x in qkv), N1, scalar_value=0.25,
                                    input_layout=layout, **ms_kw)
    out, smax, ssum = torch_tnd(qkv, torch_kw)
    assert_same(got, (to_layout(out.view(B, S1, N1, D), layout), smax.view(B, N1, S1, 8), ssum.view(B, N1, S1, 8)))


@pytest.mark.parametrize("pse_form", ["full", "broadcast", "row"])
def test_pynative_non_tnd_pse_and_dropout_equal_tnd(pse_form, pynative):
    """BSND with real_shift [B|1, N1, S1|1, S2] and MindSpore's drop_mask [B, N1, S1, S2 // 8] (S2 = 8)."""
    s2, gen = 8, torch.Generator().manual_seed(10)
    q, k, v = (torch.randn(B, s, n, D, generator=gen) for s, n in ((S1, N1), (s2, N2), (s2, N2)))
    rows = {"full": (B, N1, S1, s2), "broadcast": (1, N1, S1, s2), "row": (B, N1, 1, s2)}[pse_form]
    pse = torch.randn(rows, generator=gen)
    drop = torch.randint(0, 256, (B, N1, S1, s2 // 8), dtype=torch.uint8, generator=gen)
    got = ams.flash_attention_score(to_ms(q), to_ms(k), to_ms(v), N1, real_shift=to_ms(pse), drop_mask=to_ms(drop),
                                    keep_prob=0.9, scalar_value=0.25, input_layout="BSND")
    packed = pse.expand(B, N1, S1, s2) if pse_form == "broadcast" else pse
    out, smax, ssum = ascend_attn.flash_attention_varlen_score(
        q.reshape(-1, N1, D), k.reshape(-1, N2, D), v.reshape(-1, N2, D), N1, [S1, 2 * S1], [s2, 2 * s2],
        pse=packed.reshape(-1), drop_mask=drop.reshape(-1), keep_prob=0.9, scale_value=0.25)
    assert_same(got, (out.view(B, S1, N1, D), smax.view(B, N1, S1, 8), ssum.view(B, N1, S1, 8)))


class LayoutLoss(nn.Cell):
    def __init__(self, layout, mask, sparse_mode):
        super().__init__()
        self.layout, self.mask, self.sparse_mode = layout, mask, sparse_mode

    def construct(self, q, k, v):
        out, smax, _ = ams.flash_attention_score(q, k, v, N1, attn_mask=self.mask, scalar_value=0.25,
                                                 input_layout=self.layout, sparse_mode=self.sparse_mode)
        return (out * out).sum() + smax.sum() * 0


@pytest.mark.parametrize("layout,mask_kind", [("BNSD", "causal"), ("BSH", None)])
def test_graph_mode_non_tnd_grad_equals_tnd(layout, mask_kind):
    qkv, ms_kw, torch_kw = non_tnd_case(mask_kind, seed=8)
    leaves = [to_layout(x, layout).requires_grad_() for x in qkv]
    out = torch_tnd([_from(x, layout) for x in leaves], torch_kw)[0]
    (out * out).sum().backward()
    net = LayoutLoss(layout, ms_kw.get("attn_mask"), ms_kw.get("sparse_mode", 0))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        grads = ms.grad(net, grad_position=(0, 1, 2))(*(to_ms(x.detach()) for x in leaves))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for g, leaf in zip(grads, leaves):
        np.testing.assert_array_equal(as_numpy(g), leaf.grad.numpy())


def _from(x, layout):
    """A layout tensor -> [B, S, N, D] (torch, differentiable)."""
    if layout == "BNSD":
        return x.transpose(1, 2)
    if layout == "SBH":
        x = x.transpose(0, 1)
    return x.reshape(x.shape[0], x.shape[1], -1, D)


# ----------------------------------------------------------------------------- (e) constraints

def small_tnd(dtype="float32"):
    args, kw = fa_case(dtype, seq_q=(3, 2), seq_kv=(3, 4), head_dim=8, sparse_mode=3)
    q, k, v = (to_ms(t) for t in args[:3])
    return dict(query=q, key=k, value=v, head_num=args[3], attn_mask=to_ms(kw["atten_mask"]),
                actual_seq_qlen=tuple(args[4]), actual_seq_kvlen=tuple(args[5]), sparse_mode=3)


def bad_float64_query():
    kw = small_tnd()
    kw["query"] = kw["query"].astype(ms.float64)
    return kw


def per_head_mask_bnsd():
    gen = torch.Generator().manual_seed(9)
    q, k, v = (to_ms(torch.randn(B, n, s, D, generator=gen)) for s, n in ((S1, N1), (S2, N2), (S2, N2)))
    mask = to_ms(torch.zeros(B, N1, S1, S2, dtype=torch.bool))
    return dict(query=q, key=k, value=v, head_num=N1, attn_mask=mask, input_layout="BNSD")


# (name, keyword arguments of flash_attention_score, error type, argument named)
CONSTRAINTS = [
    ("wrong input_layout", lambda: {**small_tnd(), "input_layout": "NSD"}, ValueError, "input_layout"),
    ("padding_mask given", lambda: {**small_tnd(), "padding_mask": small_tnd()["query"]}, ValueError, "padding_mask"),
    ("sparse_mode 5", lambda: {**small_tnd(), "sparse_mode": 5}, ValueError, "sparse_mode"),
    ("float64 query", bad_float64_query, TypeError, "query"),
    ("head_num mismatch", lambda: {**small_tnd(), "head_num": 3}, ValueError, "head_num"),
    ("compressed mask shape", lambda: {**small_tnd(), "attn_mask": to_ms(torch.zeros(64, 64, dtype=torch.bool))},
     ValueError, "attn_mask"),
    ("per-head mask in BNSD", per_head_mask_bnsd, ValueError, "attn_mask"),
]


class FunctionalCell(nn.Cell):
    def __init__(self, kwargs):
        super().__init__()
        self.kwargs = kwargs

    def construct(self, query, key, value):
        kw = self.kwargs
        return ams.flash_attention_score(query, key, value, kw["head_num"], None, None, kw.get("padding_mask"),
                                         kw.get("attn_mask"), None, kw.get("actual_seq_qlen"),
                                         kw.get("actual_seq_kvlen"), 1.0, 1.0, 2147483647, 2147483647, 0,
                                         kw.get("input_layout", "TND"), kw.get("sparse_mode", 0), "")


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("name,make,error,arg", CONSTRAINTS, ids=[c[0] for c in CONSTRAINTS])
def test_constraint_raises(name, make, error, arg, mode):
    kwargs = make()
    before = {n: as_numpy(kwargs[n]).copy() for n in ("query", "key", "value")}
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        with pytest.raises(error) as info:
            if mode == "graph":
                net = FunctionalCell({n: v for n, v in kwargs.items() if n not in ("query", "key", "value")})
                net(kwargs["query"], kwargs["key"], kwargs["value"])
            else:
                ams.flash_attention_score(**kwargs)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    message = str(info.value)
    assert f"flash_attention_varlen_score: {arg} only supports" in message, message
    for n, array in before.items():
        np.testing.assert_array_equal(as_numpy(kwargs[n]), array)


class TensorLengthsNet(nn.Cell):
    def construct(self, q, k, v, mask, seq_q, seq_kv):
        return ams.flash_attention_score(q, k, v, N1, attn_mask=mask, actual_seq_qlen=seq_q, actual_seq_kvlen=seq_kv,
                                         sparse_mode=3)


@pytest.mark.parametrize("what", ["lengths", "mask content"])
def test_graph_mode_run_time_values_raise(what):
    """Length tensors / mask content are only known when the graph runs: the pyfunc's check raises."""
    kw = small_tnd()
    seq_q, mask = list(kw["actual_seq_qlen"]), kw["attn_mask"]
    if what == "lengths":
        seq_q, arg = seq_q[::-1], "actual_seq_qlen"
    else:
        mask, arg = to_ms(~compressed_mask(3)), "attn_mask"
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.raises(ValueError, match=f"flash_attention_varlen_score: {arg} only supports"):
            TensorLengthsNet()(kw["query"], kw["key"], kw["value"], mask, ms.Tensor(np.array(seq_q, np.int64)),
                               ms.Tensor(np.array(kw["actual_seq_kvlen"], np.int64)))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_primitive_constraint_in_pynative_is_raised_before_the_kernel(pynative):
    """A bad length list (a host value) raises in __call__: PyNative would swallow a pyfunc error."""
    kw = small_tnd()
    prim = ams.FlashAttentionVarLenScoreV4(kw["head_num"], sparse_mode=3)
    with pytest.raises(ValueError, match="actual_seq_qlen only supports"):
        prim(kw["query"], kw["key"], kw["value"], attn_mask=kw["attn_mask"], actual_seq_qlen=[3, 2],
             actual_seq_kvlen=kw["actual_seq_kvlen"])
    inverted = to_ms(~compressed_mask(3))
    with pytest.raises(ValueError, match="attn_mask only supports the canonical compressed mask"):
        prim(kw["query"], kw["key"], kw["value"], attn_mask=inverted, actual_seq_qlen=kw["actual_seq_qlen"],
             actual_seq_kvlen=kw["actual_seq_kvlen"])


def test_cpu_uses_the_pyfunc_fallback_backend(pynative):
    assert ams.FlashAttentionVarLenScoreV4(2).backend == "mindspore.fallback"
    assert ams.FlashAttentionUnpaddingScoreGradV4(2).backend == "mindspore.fallback"


# ----------------------------------------------------------------------------- (f) every layout x dtype x mode

class LayoutForwardAndGrad(nn.Cell):
    """Forward outputs and the gradients of sum(out^2) (computed in float32: MindSpore's CPU backend
    has no bf16 arithmetic kernels) for one input layout."""

    def __init__(self, layout, mask, sparse_mode):
        super().__init__()
        self.layout, self.mask, self.sparse_mode = layout, mask, sparse_mode

    def loss(self, q, k, v):
        out = ams.flash_attention_score(q, k, v, N1, attn_mask=self.mask, scalar_value=0.25,
                                        input_layout=self.layout, sparse_mode=self.sparse_mode)[0]
        out = ops.cast(out, ms.float32)
        return (out * out).sum()

    def construct(self, q, k, v):
        outs = ams.flash_attention_score(q, k, v, N1, attn_mask=self.mask, scalar_value=0.25,
                                         input_layout=self.layout, sparse_mode=self.sparse_mode)
        return outs, ms.grad(self.loss, grad_position=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
def test_every_layout_dtype_and_mode_equals_torch(layout, dtype, mode):
    """Each non-TND layout in each dtype, PyNative and GRAPH_MODE (bf16 in GRAPH_MODE used to fail to
    compile: no bf16 CPU Transpose / Reshape): forward and gradients equal the torch TND op's bits."""
    qkv, ms_kw, torch_kw = non_tnd_case("causal", seed=11)
    leaves = [to_layout(x, layout).to(getattr(torch, dtype)).requires_grad_() for x in qkv]
    out, smax, ssum = torch_tnd([_from(x, layout) for x in leaves], torch_kw)
    (out.float() ** 2).sum().backward()
    net = LayoutForwardAndGrad(layout, ms_kw["attn_mask"], ms_kw["sparse_mode"])
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        outs, grads = net(*(to_ms(x.detach()) for x in leaves))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_same(outs, (to_layout(out.detach().view(B, S1, N1, D), layout), smax.view(B, N1, S1, 8),
                       ssum.view(B, N1, S1, 8)))
    for g, leaf in zip(grads, leaves):
        assert g.dtype == to_ms(leaf.detach()).dtype
        np.testing.assert_array_equal(as_numpy(g), as_numpy(leaf.grad))


def test_graph_mode_failure_leaves_no_dump_in_the_working_directory(tmp_path, monkeypatch):
    """A failing GRAPH_MODE compile dumps analyze_fail.ir under MS_OM_PATH (set by conftest to a
    temporary folder), never into the directory the tests run from."""
    class Net(nn.Cell):
        def construct(self, q, k, v):
            return ams.flash_attention_score(q, k, v, N1 + 1, input_layout="BNSD")

    monkeypatch.chdir(tmp_path)
    x = ms.Tensor(np.zeros((B, N1, S1, D), np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.raises(ValueError, match="head_num"):
            Net()(x, x, x)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert list(tmp_path.iterdir()) == []
