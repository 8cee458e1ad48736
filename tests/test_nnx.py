"""NNX module behaviour beyond parity: dropout between layers, train/eval, rngs, attributes."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _torch_oracle import assert_close
from flax import nnx

import jaxrnn


def test_parameter_attributes_are_torchs():
    lstm = jaxrnn.LSTM(10, 20, 2, bidirectional=True, proj_size=5, rngs=nnx.Rngs(0))
    t = torch.nn.LSTM(10, 20, 2, bidirectional=True, proj_size=5)
    for k, v in t.state_dict().items():
        assert getattr(lstm, k)[...].shape == tuple(v.shape), k
    assert lstm.weight_ih_l0.shape == (80, 10)
    assert isinstance(lstm.weight_hr_l1_reverse, nnx.Param)
    assert len(nnx.state(lstm, nnx.Param)) == len(t.state_dict())


def test_dropout_is_active_in_train_mode_only():
    x = jnp.ones((6, 4, 3))
    m = jaxrnn.GRU(3, 8, 3, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    a = m(x)[0]
    b = m(x)[0]
    assert not np.allclose(a, b)  # the dropout stream advances between calls
    m.eval()
    c, d = m(x)[0], m(x)[0]
    np.testing.assert_array_equal(c, d)
    t = torch.nn.GRU(3, 8, 3, dropout=0.5).eval()
    m.load_state_dict(t.state_dict())
    c = m(x)[0]
    assert_close(c, t(torch.ones(6, 4, 3))[0].detach().numpy())
    m.train()
    assert not np.allclose(m(x)[0], c)
    # explicit override for one call, and an explicit key
    np.testing.assert_array_equal(m(x, deterministic=True)[0], c)
    k = jax.random.key(3)
    np.testing.assert_array_equal(m(x, rngs=k)[0], m(x, rngs=k)[0])


def test_nnx_view_sets_evaluation_mode_as_for_flax_dropout():
    """``nnx.view(model, deterministic=True)`` (Flax 0.12) switches jaxrnn layers to evaluation
    mode inside a bigger model, as it does ``nnx.Dropout`` (it silently kept their dropout on
    before); the view gives torch's eval-mode outputs and the original stays in training mode."""

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.rnn = jaxrnn.GRU(3, 8, 3, dropout=0.5, rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)

    model = Model(nnx.Rngs(0))
    t = torch.nn.GRU(3, 8, 3, dropout=0.5).eval()
    model.rnn.load_state_dict(t.state_dict())
    view = nnx.view(model, deterministic=True)
    assert view.drop.deterministic and not view.rnn.training and model.rnn.training
    x = np.random.default_rng(0).standard_normal((6, 4, 3)).astype(np.float32)
    assert_close(view.rnn(x)[0], t(torch.from_numpy(x))[0].detach().numpy())
    train_view = nnx.view(view, deterministic=False)
    assert train_view.rnn.training and not np.allclose(train_view.rnn(x)[0], view.rnn(x)[0])
    assert not nnx.view(jaxrnn.LSTMCell(3, 4, rngs=nnx.Rngs(0)), deterministic=True).training


def test_dropout_one_in_train_mode_matches_torch_exactly():
    """With p=1 torch's train-mode dropout is deterministic (every unit between layers is zeroed),
    so a train-mode jaxrnn module must give torch's outputs and final states."""
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    for cls in (torch.nn.GRU, torch.nn.LSTM):
        torch.manual_seed(0)
        t = cls(3, 4, 3, dropout=1.0).train()
        with torch.no_grad():
            want = t(torch.from_numpy(x))
        want = jax.tree.map(lambda v: v.numpy(), tuple(want))
        m = jaxrnn.from_torch(t, rngs=nnx.Rngs(0, dropout=1))
        assert not m.deterministic  # from_torch keeps torch's training mode
        assert_close(m(x), want, what=f"{cls.__name__} stream")
        assert_close(m(x, rngs=jax.random.key(3)), want, what=f"{cls.__name__} key")
        assert_close(m(x, deterministic=False), want, what=f"{cls.__name__} train")
        # and the layers above the first really see zeros: eval mode differs
        m.eval()
        assert not np.allclose(m(x)[0], want[0])


def test_dropout_changed_after_construction_as_torch():
    """torch's test_RNN_change_dropout: ``module.dropout`` set after building with 0 takes
    effect (p=1 is deterministic, so the outputs are compared with torch's); without a dropout
    stream in the module's rngs, the call says where randomness comes from."""
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    t = torch.nn.LSTM(3, 4, 3, dropout=0.0).train()
    m = jaxrnn.from_torch(t, rngs=nnx.Rngs(0))
    t.dropout = m.dropout = 1.0
    with torch.no_grad():
        want = jax.tree.map(lambda v: v.numpy(), tuple(t(torch.from_numpy(x))))
    assert_close(m(x), want, what="dropout changed to 1")
    m.dropout = 0.5
    assert not np.allclose(m(x)[0], m(x)[0])
    m.dropout = 0.0
    np.testing.assert_array_equal(m(x)[0], m(x)[0])
    bare = jaxrnn.LSTM(3, 4, 3, rngs=nnx.Rngs(params=0))
    bare.dropout = 0.5
    with pytest.raises(ValueError, match=r"LSTM: dropout=0.5 in training mode needs randomness"):
        bare(x)
    bare(x, rngs=nnx.Rngs(dropout=1))
    bare.eval()(x)


@pytest.mark.parametrize("rate", [1.5, -0.5])
@pytest.mark.parametrize("layers,training", [(1, True), (2, False), (2, True)])
def test_dropout_set_out_of_range_fails_where_torchs_does(rate, layers, training):
    """torch checks ``module.dropout`` only where dropout acts (training mode, more than one
    layer), with a RuntimeError; elsewhere the module runs, with torch's outputs."""
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    t = torch.nn.GRU(3, 4, layers).train(training)
    m = jaxrnn.from_torch(t, rngs=nnx.Rngs(0)).train(training)
    t.dropout = m.dropout = rate
    try:
        with torch.no_grad():
            want = jax.tree.map(lambda v: v.numpy(), tuple(t(torch.from_numpy(x))))
    except RuntimeError as theirs:
        with pytest.raises(RuntimeError) as ours:
            m(x)
        assert isinstance(ours.value, ValueError)
        assert str(ours.value) == f"GRU: {theirs}"
    else:
        assert_close(m(x), want)


@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_of_size_zero_as_torch(cls):
    """torch's test_RNN_cell_forward_zero_hidden_size: cells take a hidden size of 0."""
    t = getattr(torch.nn, cls)(10, 0)
    m = getattr(jaxrnn, cls)(10, 0, rngs=nnx.Rngs(0))
    assert repr(m) == repr(t)
    assert {k: v.shape for k, v in m.state_dict().items()} == {
        k: tuple(v.shape) for k, v in t.state_dict().items()
    }
    x, h = np.ones((3, 10), np.float32), np.ones((3, 0), np.float32)
    hx = (h, h) if cls == "LSTMCell" else h
    want = t(torch.from_numpy(x), jax.tree.map(torch.from_numpy, hx))
    got = m(x, hx)
    for a, b in zip(
        jax.tree.leaves(got), jax.tree.leaves(tuple(want) if cls == "LSTMCell" else want)
    ):
        assert a.shape == tuple(b.shape)
    with pytest.raises(ValueError, match=f"{cls}: hidden_size must be non-negative, got -1"):
        getattr(jaxrnn, cls)(10, -1, rngs=nnx.Rngs(0))
    from jaxrnn import linen as jrl

    lin = getattr(jrl, cls)(10, 0)
    out = lin.apply(lin.init(jax.random.key(0), x), x, hx)
    assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, got)


def test_dropout_statistics_match_torchs_inverted_dropout():
    """Between layers, a fraction p of the units is zeroed and the rest scaled by 1/(1-p)."""
    from jaxrnn.functional import dropout_layer

    x = jnp.ones((200, 200))
    y = np.asarray(dropout_layer(jax.random.key(0), x, 0.3))
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((y == 0).mean() - 0.3) < 0.01
    np.testing.assert_array_equal(dropout_layer(jax.random.key(0), x, 1.0), 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_dropout_scale_is_torchs_to_the_bit(dtype):
    """The kept units' scale equals torch's CPU dropout's (a mask of ones divided by ``1 - p``)
    for rates where rounding ``1/(1-p)`` once differs from it, and given as numpy scalars."""
    from jaxrnn.functional import dropout_layer

    rates = [0.0644444, 0.1, 0.2, 0.3, 0.37, 0.5, 0.55, 0.7, 0.9, 0.93, 0.999]
    rates += [np.float32(0.0644444), np.float64(0.3)]
    for rate in rates:
        with jax.enable_x64(dtype == "float64"):
            x = jnp.ones((4096,), getattr(jnp, dtype))
            ours = np.asarray(dropout_layer(jax.random.key(0), x, rate)).astype(np.float64)
        kept = ours[ours != 0]
        ones = torch.ones(4096, dtype=getattr(torch, dtype))
        theirs = torch.nn.functional.dropout(ones, float(rate)).double().numpy()
        want = theirs[theirs != 0][0]
        assert kept.size and (kept == want).all(), (rate, kept[0], want)


def test_dropout_one_layer_has_no_effect_like_torch():
    t = torch.nn.LSTM(3, 4, 1)
    m = jaxrnn.from_torch(t)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    assert_close(m(x)[0], t(torch.from_numpy(x))[0].detach().numpy())


def test_train_step_under_nnx_jit_updates_params():
    import optax

    m = jaxrnn.LSTM(3, 4, 2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(m, optax.sgd(0.1), wrt=nnx.Param)
    x = jnp.ones((5, 2, 3))

    @nnx.jit
    def step(m, opt, x):
        loss, g = nnx.value_and_grad(lambda m: (m(x)[0] ** 2).mean())(m)
        opt.update(m, g)
        return loss

    l0 = step(m, opt, x)
    l1 = step(m, opt, x)
    assert l1 < l0


def test_failed_call_draws_no_dropout_randomness():
    """As in torch (checks before any random draw), a call that raises leaves the dropout stream
    where it was: the next valid call gives the masks of a module that never saw the bad one."""
    x = jnp.ones((4, 2, 3))
    a = jaxrnn.LSTM(3, 8, 3, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    b = jaxrnn.LSTM(3, 8, 3, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    try:
        a(jnp.ones((4, 2, 5)))  # wrong input size
    except ValueError:
        pass
    else:
        raise AssertionError("expected a ValueError")
    override = nnx.Rngs(dropout=7)
    try:
        a(x, (jnp.zeros((1, 2, 8)), jnp.zeros((3, 2, 8))), rngs=override)  # wrong h_0 size
    except ValueError:
        pass
    else:
        raise AssertionError("expected a ValueError")
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
    np.testing.assert_array_equal(a(x, rngs=override)[0], b(x, rngs=nnx.Rngs(dropout=7))[0])
    assert not np.allclose(a(x)[0], a(x)[0])  # valid calls still advance the stream


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.LSTM(
            10, 20, 2, batch_first=True, bidirectional=True, proj_size=5, dropout=0.5
        ),
        lambda nn: nn.RNN(10, 20, nonlinearity="relu", bias=False),
        lambda nn: nn.GRU(3, 4, 3, bidirectional=1),
        lambda nn: nn.RNNCell(3, 4, nonlinearity="relu"),
        lambda nn: nn.LSTMCell(3, 4, bias=False),
        lambda nn: nn.GRUCell(3, 4),
    ],
)
def test_torch_attributes_and_repr(make):
    """What torch code reads off a module: its repr, ``extra_repr``, the weight names and groups,
    ``all_weights`` (values), ``training``; ``eval()``/``train()`` return the module."""
    t = make(torch.nn)
    m = jaxrnn.from_torch(t)
    assert repr(m) == repr(t) and str(m) == str(t) and f"{m}" == f"{t}"
    assert m.extra_repr() == t.extra_repr()
    named, named_t = list(m.named_parameters("p.")), list(t.named_parameters("p."))
    assert [k for k, _ in named] == [k for k, _ in named_t]
    for (_, a), (_, b), c in zip(named, named_t, m.parameters(), strict=True):
        np.testing.assert_array_equal(a, b.detach().numpy())
        np.testing.assert_array_equal(c, a)
    assert m.training == t.training
    assert (m.eval() is m, m.training) == (t.eval() is t, t.training)
    assert (m.train() is m, m.training) == (t.train() is t, t.training)
    assert (m.train(False) is m, m.training) == (t.train(False) is t, t.training)
    for mode in (True, False):  # torch's flag is an attribute; assigning it is train(mode)
        m.training, t.training = mode, mode
        assert m.training == t.training == (not m.deterministic) == mode
    if not hasattr(t, "_all_weights"):
        return
    assert m._all_weights == t._all_weights
    assert m._flat_weights_names == t._flat_weights_names
    for ours, theirs in zip(m.all_weights, t.all_weights, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b.detach().numpy())
    for a, b in zip(m._flat_weights, t._flat_weights, strict=True):
        np.testing.assert_array_equal(a, b.detach().numpy())
    m.flatten_parameters()


def test_state_dict_and_load_state_dict_as_torchs():
    """``state_dict(destination=, prefix=, keep_vars=)``, and ``load_state_dict``'s result (type
    name, repr, fields), errors (torch's type and message) and ``assign=`` against torch's."""
    t = torch.nn.GRU(3, 4, 2, bidirectional=True)
    m = jaxrnn.from_torch(t)
    dest, dest_t = {"other": 1}, {"other": 1}
    ours = m.state_dict(destination=dest, prefix="enc.", keep_vars=True)
    theirs = t.state_dict(destination=dest_t, prefix="enc.", keep_vars=True)
    assert ours is dest and list(ours) == list(theirs)
    assert type(m.state_dict()) is type(t.state_dict())  # an OrderedDict, as torch's
    assert list(m.state_dict()) == list(t.state_dict())
    sd = t.state_dict()
    for partial in (sd, {**sd, "extra": torch.zeros(1)}, {k: sd[k] for k in list(sd)[1:]}):
        got, want = m.load_state_dict(partial, strict=False), t.load_state_dict(partial, False)
        assert got == want and repr(got) == repr(want) and str(got) == str(want)
        assert type(got).__name__ == type(want).__name__
        assert got.missing_keys == want.missing_keys
    for bad in ({**sd, "extra": torch.zeros(1)}, {k: sd[k] for k in list(sd)[1:]}):
        with pytest.raises(Exception) as theirs_err:
            t.load_state_dict(bad)
        with pytest.raises(type(theirs_err.value)) as ours_err:
            m.load_state_dict(bad)
        assert str(ours_err.value) == str(theirs_err.value)
        assert isinstance(ours_err.value, ValueError)
    # assign=True keeps the checkpoint's dtype (torch's too); without it, the module's
    half = {k: v.half() for k, v in sd.items()}
    m.load_state_dict(half)
    assert m.weight_ih_l0[...].dtype == jnp.float32
    m.load_state_dict(half, assign=True)
    t.load_state_dict(half, assign=True)
    for k, v in t.state_dict().items():
        assert str(m.state_dict()[k].dtype) == str(v.dtype).removeprefix("torch.")
        np.testing.assert_array_equal(m.state_dict()[k], v.numpy())


def test_state_dict_positional_arguments_warn_as_torchs():
    t = torch.nn.LSTM(3, 4)
    m = jaxrnn.from_torch(t)
    with pytest.warns(FutureWarning, match="Positional args are being deprecated") as theirs:
        want = t.state_dict(None, "enc.")
    with pytest.warns(FutureWarning) as ours:
        got = m.state_dict(None, "enc.")
    assert str(ours[0].message) == str(theirs[0].message)
    assert list(got) == list(want)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v.numpy())


@pytest.mark.parametrize(
    "cast",
    [
        lambda m: m.double(),
        lambda m: m.to(torch.float64),
        lambda m: m.to("float64" if isinstance(m, nnx.Module) else torch.float64),
        lambda m: m.to(torch.zeros(1, dtype=torch.float64)),
        lambda m: m.half(),
        lambda m: m.to(dtype=torch.float16),
        lambda m: m.bfloat16(),
        lambda m: m.double().float(),
    ],
    ids=["double", "to-torch", "to-name", "to-tensor", "half", "to-dtype", "bfloat16", "float"],
)
@pytest.mark.parametrize("cls", ["LSTM", "GRUCell"])
def test_module_casts_as_torchs(cls, cast):
    """``double()``, ``to(dtype)``, ... cast every parameter in place and return the module;
    called with a tensor of that dtype (``forward`` too), the two agree as torch's with itself."""
    torch.manual_seed(0)
    t = getattr(torch.nn, cls)(3, 4, **({"num_layers": 2} if cls == "LSTM" else {}))
    with jax.enable_x64(True):
        m = jaxrnn.from_torch(t)
        assert cast(m) is m
        cast(t)
        dtype = t.weight_ih_l0.dtype if cls == "LSTM" else t.weight_ih.dtype
        assert m.param_dtype == jnp.dtype(str(dtype).removeprefix("torch."))
        for k, v in t.state_dict().items():
            got = m.state_dict()[k]
            assert str(got.dtype) == str(v.dtype).removeprefix("torch.")
            np.testing.assert_array_equal(got.astype(np.float32), v.float().numpy())
        x = torch.randn(5, 2, 3) if cls == "LSTM" else torch.randn(2, 3)
        with torch.no_grad():
            want = t(x.to(dtype))
        got = m.forward(jnp.asarray(x.numpy()).astype(m.param_dtype))
        tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-6
        assert_close(
            jax.tree.map(lambda a: np.asarray(a, np.float32), got),
            jax.tree.map(lambda a: a.float().numpy(), want),
            atol=tol,
            rtol=tol,
        )


def test_to_keeps_the_parameter_objects_as_torchs():
    """A held reference (or a parameter tied between two modules) follows the cast."""
    t, m = torch.nn.GRU(3, 4), jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    held_t, held = t.weight_ih_l0, m.weight_ih_l0
    t.half(), m.half()
    assert t.weight_ih_l0 is held_t and m.weight_ih_l0 is held
    assert held[...].dtype == jnp.float16


@pytest.mark.parametrize("cls,args", [("LSTM", (3, 4, 2)), ("GRUCell", (3, 4))])
def test_graphdef_is_hashable_for_static_arguments(cls, args):
    """NNX keeps plain attributes in the graphdef; ``jax.jit(static_argnums=)`` hashes it."""
    model = getattr(jaxrnn, cls)(*args, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    assert hash(graphdef) == hash(nnx.split(getattr(jaxrnn, cls)(*args, rngs=nnx.Rngs(1)))[0])
    x = jnp.ones((5, 2, 3) if cls == "LSTM" else (2, 3))
    run = jax.jit(lambda g, s, x: jax.tree.leaves(nnx.merge(g, s)(x))[0], static_argnums=0)
    np.testing.assert_array_equal(run(graphdef, state, x), jax.tree.leaves(model(x))[0])


def test_module_to_refuses_what_torchs_refuses_and_warns_without_x64():
    t, m = torch.nn.GRU(3, 4), jaxrnn.GRU(3, 4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError) as theirs:
        t.to(torch.int64)
    with pytest.raises(TypeError) as ours:
        m.to(torch.int64)
    assert str(ours.value) == f"GRU.to: {theirs.value}".replace("torch.int64", "int64")
    assert m.weight_ih_l0[...].dtype == jnp.float32  # nothing changed
    if not jax.config.jax_enable_x64:
        with pytest.warns(UserWarning, match="GRU.to: the dtype is float64 but jax_enable_x64"):
            m.double()
        assert m.weight_ih_l0[...].dtype == jnp.float32
    cpu = jax.devices("cpu")[0]
    assert m.cpu() is m and m.weight_ih_l0[...].devices() == {cpu}


def test_params_to_state_dict_restores_torchs_key_order():
    t = torch.nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2)
    params = jax.tree.map(jnp.asarray, dict(sorted(jaxrnn.from_torch(t).torch_params().items())))
    assert list(params) != list(t.state_dict())  # sorted by name
    assert list(jaxrnn.params_to_state_dict(params, "m.")) == list(t.state_dict(prefix="m."))


def test_dropout_needs_a_stream_and_says_so():
    with pytest.raises(ValueError, match="LSTM: dropout=0.5 between layers needs a 'dropout'"):
        jaxrnn.LSTM(3, 4, 2, dropout=0.5, rngs=nnx.Rngs(params=0))
    jaxrnn.LSTM(3, 4, 2, dropout=0.5, rngs=nnx.Rngs(params=0, dropout=1))
    jaxrnn.LSTM(3, 4, 1, dropout=0.0, rngs=nnx.Rngs(params=0))  # no dropout, no stream needed


def test_linen_layers_have_torchs_mode():
    from jaxrnn import linen as jrl

    assert jrl.RNN(3, 4, nonlinearity="relu").mode == torch.nn.RNN(3, 4, nonlinearity="relu").mode
    assert jrl.LSTM(3, 4).mode == "LSTM" and jrl.GRU(3, 4).mode == "GRU"


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
def test_linen_layers_report_torchs_proj_size(cls):
    from jaxrnn import linen as jrl

    ours, theirs = getattr(jrl, cls)(3, 4), getattr(torch.nn, cls)(3, 4)
    assert (
        ours.proj_size == theirs.proj_size == jaxrnn.__dict__[cls](3, 4, rngs=nnx.Rngs(0)).proj_size
    )
    assert ours.clone().proj_size == theirs.proj_size  # as Flax clones it in init/apply
    assert f"proj_size = {theirs.proj_size}" in repr(ours)


RESET = [
    (lambda r: jaxrnn.LSTM(3, 8, 2, proj_size=2, bidirectional=True, rngs=r), torch.nn.LSTM),
    (lambda r: jaxrnn.GRU(3, 5, rngs=r), torch.nn.GRU),
    (lambda r: jaxrnn.RNNCell(3, 4, bias=False, rngs=r), torch.nn.RNNCell),
    (lambda r: jaxrnn.LSTMCell(3, 6, param_dtype=jnp.bfloat16, rngs=r), torch.nn.LSTMCell),
]


@pytest.mark.parametrize("make, torch_cls", RESET)
def test_reset_parameters_draws_torchs_init_again(make, torch_cls):
    """Torch's reset_parameters: every parameter redrawn in place from U(-k, k), k =
    1/sqrt(hidden_size) (torch's bound, read from a torch module reset the same way), dtype
    kept; with rngs the draw equals a new module's, without it numpy's global seed decides."""
    ours = make(nnx.Rngs(1))
    before = ours.state_dict()
    dtype = ours.state_dict()[next(iter(before))].dtype
    torch.manual_seed(0)
    theirs = torch_cls(ours.input_size, ours.hidden_size)
    theirs.reset_parameters()
    theirs_bound = max(p.abs().max().item() for p in theirs.parameters())
    np.random.seed(0)
    ours.reset_parameters()
    after = ours.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        assert v.dtype == dtype and v.shape == before[k].shape
        assert not np.array_equal(v, before[k])
        assert np.abs(np.asarray(v, np.float32)).max() <= 1 / np.sqrt(ours.hidden_size) + 1e-6
    ours_bound = max(np.abs(np.asarray(v, np.float32)).max() for v in after.values())
    assert ours_bound > 0.9 / np.sqrt(ours.hidden_size)  # the whole range, as torch's draws
    # torch's own draws come close to the same bound (all parameters share it)
    assert 0.9 / np.sqrt(ours.hidden_size) < theirs_bound <= 1 / np.sqrt(ours.hidden_size)
    np.random.seed(0)
    ours.reset_parameters()
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v, np.float32), np.asarray(after[k], np.float32))
    ours.reset_parameters(nnx.Rngs(7))
    fresh = make(nnx.Rngs(7)).state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(np.asarray(v, np.float32), np.asarray(fresh[k], np.float32))
    with pytest.raises(TypeError, match=r"reset_parameters: rngs must be nnx.Rngs, a JAX key"):
        ours.reset_parameters("seed")


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: jaxrnn.LSTM(3, 4, 2, rngs=nnx.Rngs(0), **kw),
        lambda **kw: jaxrnn.GRUCell(3, 4, rngs=nnx.Rngs(0), **kw),
    ],
)
def test_torch_factory_arguments(make):
    """torch's ``device=`` and torch dtypes: the parameters land on that device, a torch dtype is
    read by its name; anything else is a TypeError naming the module, at construction."""
    cpu = jax.devices("cpu")[0]
    for device in ("cpu", torch.device("cpu"), cpu, jax.sharding.SingleDeviceSharding(cpu)):
        m = make(device=device)
        assert all(p.devices() == {cpu} for p in m.parameters())
        for k, v in make().state_dict().items():  # the same values, placed there
            np.testing.assert_array_equal(m.state_dict()[k], v)
    with pytest.warns(UserWarning, match="dtype=torch.float32 sets the computation dtype"):
        m = make(param_dtype=torch.float16, dtype=torch.float32)
    assert all(p.dtype == jnp.float16 for p in m.parameters()) and m.dtype == jnp.float32
    name = type(make()).__name__
    with pytest.raises(TypeError, match=f"{name}: device must be a JAX device or sharding"):
        make(device=3)
    with pytest.raises(TypeError, match=f"{name}: param_dtype must be a floating-point dtype"):
        make(param_dtype=torch.int64)
    with pytest.raises(TypeError, match=f"{name}: dtype must be a floating-point dtype"):
        make(dtype="int32")


def test_base_classes_as_torchs():
    """``isinstance`` checks written against ``torch.nn.RNNBase``/``RNNCellBase`` port to
    ``jaxrnn.RNNBase``/``RNNCellBase``; an unknown keyword names the base, as torch's does."""
    z = nnx.Rngs(0)
    for name in ("RNN", "LSTM", "GRU"):
        assert isinstance(getattr(torch.nn, name)(2, 3), torch.nn.RNNBase)
        assert isinstance(getattr(jaxrnn, name)(2, 3, rngs=z), jaxrnn.RNNBase)
        assert not isinstance(getattr(jaxrnn, name + "Cell")(2, 3, rngs=z), jaxrnn.RNNBase)
        assert isinstance(getattr(jaxrnn, name + "Cell")(2, 3, rngs=z), jaxrnn.RNNCellBase)
    with pytest.raises(TypeError) as theirs:
        torch.nn.LSTM(2, 3, foo=1)
    with pytest.raises(TypeError) as ours:
        jaxrnn.LSTM(2, 3, foo=1, rngs=z)
    assert str(ours.value) == str(theirs.value)
    for name in ("RNNCell", "LSTMCell", "GRUCell"):  # torch's names the cell, not its base
        for keyword in ("foo", "proj_size"):
            with pytest.raises(TypeError) as theirs:
                getattr(torch.nn, name)(2, 3, **{keyword: 1})
            with pytest.raises(TypeError) as ours:
                getattr(jaxrnn, name)(2, 3, **{keyword: 1}, rngs=z)
            assert str(ours.value) == str(theirs.value)
    m = jaxrnn.RNNBase("GRU", 2, 3, rngs=z)
    assert m.state_dict().keys() == torch.nn.RNNBase("GRU", 2, 3).state_dict().keys()
    # an unknown mode: torch's RNNBase's ValueError; the cell base (whose torch twin takes
    # num_chunks, not a mode) says the same (both were a KeyError)
    with pytest.raises(ValueError) as theirs:
        torch.nn.RNNBase("FOO", 2, 3)
    for base in (jaxrnn.RNNBase, jaxrnn.RNNCellBase):
        with pytest.raises(ValueError) as ours:
            base("FOO", 2, 3, rngs=z)
        assert str(ours.value).startswith(f"{base.__name__}: {theirs.value}")


def test_torch_dtype_as_dtype_warns_that_it_is_the_computation_dtype():
    """torch's ``dtype=`` sets the parameters' dtype; here ``dtype=`` is Flax's computation dtype
    and ``param_dtype=`` the parameters'. A torch dtype passed as ``dtype=`` (a torch signature
    copied over) warns, naming ``param_dtype=``; a JAX dtype does not."""
    with pytest.warns(UserWarning, match=r"param_dtype= here, e.g. param_dtype=torch.float64"):
        m = jaxrnn.LSTM(4, 3, dtype=torch.float64, rngs=nnx.Rngs(0))
    assert m.weight_ih_l0[...].dtype == jnp.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxrnn.LSTM(4, 3, dtype=jnp.bfloat16, param_dtype=torch.bfloat16, rngs=nnx.Rngs(0))


def test_porting_a_small_torch_model_as_the_readme_shows():
    """The README's recipe for a whole torch model: Flax layers take torch's weights by
    assignment (``nnx.Embed.embedding = weight``, ``nnx.Linear.kernel = weight.T``), the
    recurrent layer by ``from_torch``; eager calls take torch tensors as input."""

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(50, 8)
            self.gru = torch.nn.GRU(8, 16, batch_first=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, tokens):
            output, h_n = self.gru(self.embedding(tokens))
            return self.fc(h_n[-1])

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.embedding = nnx.Embed(50, 8, rngs=rngs)
            self.gru = jaxrnn.GRU(8, 16, batch_first=True, rngs=rngs)
            self.fc = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, tokens):
            output, h_n = self.gru(self.embedding(tokens))
            return self.fc(h_n[-1])

    torch.manual_seed(0)
    t = TorchNet()
    m = Net(nnx.Rngs(0))
    m.embedding.embedding[...] = jnp.asarray(t.embedding.weight.detach().numpy())
    m.fc.kernel[...] = jnp.asarray(t.fc.weight.detach().numpy().T)
    m.fc.bias[...] = jnp.asarray(t.fc.bias.detach().numpy())
    m.gru = jaxrnn.from_torch(t.gru)
    tokens = torch.randint(0, 50, (4, 6))
    want = t(tokens).detach().numpy()
    assert_close(m(jnp.asarray(tokens.numpy())), want)
    x = torch.randn(6, 4, 8)
    assert_close(m.gru(x)[0], t.gru(x)[0].detach().numpy())  # a torch tensor, eagerly
    assert m.gru.weight_ih_l0.shape == tuple(t.gru.weight_ih_l0.size())


@pytest.mark.parametrize("kind", ["LSTM", "GRUCell"])
def test_torch_tensors_that_require_grad_are_taken_as_input_and_hx(kind):
    """A torch tensor out of a torch layer, or one made with ``requires_grad=True`` (which
    ``numpy()`` refuses), is taken as input and as ``hx``, as a plain tensor is; the values
    are the tensor's."""
    torch.manual_seed(0)
    t = getattr(torch.nn, kind)(3, 4)
    m = jaxrnn.from_torch(t)
    x = torch.nn.Linear(3, 3)(torch.randn(5, 2, 3) if kind == "LSTM" else torch.randn(2, 3))
    h = torch.randn(*((1, 2, 4) if kind == "LSTM" else (2, 4)), requires_grad=True)
    hx = (h, torch.randn(1, 2, 4)) if kind == "LSTM" else h
    assert x.requires_grad and h.requires_grad
    got, want = m(x, hx), t(x, hx)
    assert_close(got, jax.tree.map(lambda v: v.detach().numpy(), want))


def test_msgpack_of_the_parameters_round_trips_as_the_readme_says():
    """``flax.serialization`` writes ``nnx.state(model, nnx.Param)`` (the whole state holds the
    dropout stream's key, which msgpack cannot write); the restored model runs as torch's."""
    from flax import serialization

    t = torch.nn.LSTM(3, 4, 2, dropout=0.5).eval()
    with pytest.raises(TypeError, match="PRNGKey"):
        serialization.to_bytes(nnx.to_pure_dict(nnx.state(jaxrnn.from_torch(t))))
    blob = serialization.to_bytes(nnx.to_pure_dict(nnx.state(jaxrnn.from_torch(t), nnx.Param)))
    m = jaxrnn.LSTM(3, 4, 2, dropout=0.5, rngs=nnx.Rngs(1)).eval()
    state = nnx.state(m, nnx.Param)
    nnx.replace_by_pure_dict(state, serialization.from_bytes(nnx.to_pure_dict(state), blob))
    nnx.update(m, state)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out, (h, c) = m(jnp.asarray(x))
    t_out, (t_h, t_c) = t(torch.from_numpy(x))
    assert_close((out, h, c), (t_out.detach(), t_h.detach(), t_c.detach()))


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_bias_free_cells_have_torchs_none_biases(cls):
    """Torch's cells register ``bias_ih``/``bias_hh`` as ``None`` without a bias, so
    ``cell.bias_ih is None`` tells; the parameters and state dict are the weights only."""
    theirs = getattr(torch.nn, cls)(3, 4, bias=False)
    ours = jaxrnn.from_torch(theirs)
    assert ours.bias_ih is theirs.bias_ih is None and ours.bias_hh is theirs.bias_hh is None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert sorted(nnx.state(ours, nnx.Param).keys()) == sorted(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    out = ours(jnp.asarray(x))
    assert_close(out, jax.tree.map(lambda t: t.detach(), theirs(torch.from_numpy(x))))
