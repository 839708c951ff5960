"""Issue 14 in the reference models: message types, random / three-nn frames and frames
refined between layers; every new combination checked for O(3) equivariance in float64 with
reflections, translations and a uniform scale."""

import pytest
import torch
from torch_geometric.data import Batch, Data

import models
import tensorframes as tf
from tensorframes.testing import random_orthogonal

MESSAGES = ("scalar", "vector", "tensor", "irreps")
#: Small but complete: the message types' own reps (38 / 76 / 152 and 76 dims), narrow MLPs.
SMALL = {"pointnet2": dict(width=16, k=8), "dgcnn": dict(width=16, k=8, num_layers=3)}


def _batch(n=96, clouds=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = []
    for _ in range(clouds):
        pos = torch.randn(n, 3, generator=gen) * torch.tensor([2.0, 1.0, 0.5])
        pos = pos + 0.3 * pos[:, :1] ** 2 * torch.tensor([0.0, 1.0, 0.0])
        data.append(Data(pos=pos))
    return Batch.from_data_list(data)


def _run(model, batch, pos):
    return model(Batch(pos=pos, batch=batch.batch, ptr=batch.ptr))


def _group_elements(seed=0):
    """``(g, t, s)``: a rotation composed with a reflection (det -1) and a rotation (det +1),
    each with a random translation and a uniform scale."""
    gen = torch.Generator().manual_seed(seed)
    rot = random_orthogonal(2, det=1, generator=gen)
    reflect = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    ts = torch.randn(2, 3, generator=gen, dtype=torch.float64) * 3
    return [(rot[0] @ reflect, ts[0], 0.37), (rot[1], ts[1], 5.0)]


def equivariance_error(model, batch=None):
    """Largest ``|f(s g x + t) - g f(x)|`` over :func:`_group_elements`, relative to
    ``max(1, max |f(x)|)``, in float64 (the model is cast and put in eval mode)."""
    batch = _batch() if batch is None else batch
    model = model.double().eval()
    pos = batch.pos.double()
    with torch.no_grad():
        base = _run(model, batch, pos)
        scale = max(1.0, float(base.abs().max()))
        err = 0.0
        for g, t, s in _group_elements():
            assert torch.linalg.det(g).sign() in (-1, 1)
            out = _run(model, batch, s * pos @ g.T + t)
            err = max(err, float((out - base @ g.T).abs().max()) / scale)
    return err


def _perturb(model, scale=0.3, seed=1):
    """Move every parameter away from its initialisation (identity frame updates included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


# ---------------------------------------------------------------------------------- messages


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
@pytest.mark.parametrize("messages", MESSAGES)
def test_message_types_are_o3_equivariant_with_pca_frames(arch, messages):
    torch.manual_seed(0)
    model = _perturb(models.build(arch, "pca", messages=messages, **SMALL[arch]))
    assert equivariance_error(model) < 1e-10


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_message_types_set_the_hidden_reps(arch):
    expected = {
        "pointnet2": {
            "scalar": ["38x0n", "76x0n", "152x0n"],
            "vector": ["8x0n+10x1n", "16x0n+20x1n", "32x0n+40x1n"],
            "tensor": ["8x0n+4x1n+2x2n", "16x0n+8x1n+4x2n", "32x0n+16x1n+8x2n"],
            "irreps": ["8x0e+5x1o+3x2e", "16x0e+10x1o+6x2e", "32x0e+20x1o+12x2e"],
        },
        "dgcnn": {"scalar": ["76x0n"], "vector": ["16x0n+20x1n"], "tensor": ["16x0n+8x1n+4x2n"],
                  "irreps": ["16x0e+10x1o+6x2e"]},
    }[arch]
    for messages, reps in expected.items():
        model = models.build(arch, "pca", messages=messages)
        got = model.reps if arch == "pointnet2" else [model.reps]
        assert got == [tf.reps.as_reps(r) for r in reps], messages
        assert isinstance(got[0], tf.Irreps if messages == "irreps" else tf.TensorReps)
        assert model.messages == messages and model.options["messages"] == messages
    # an explicit hidden= overrides the message type's reps
    hidden = "4x0n+2x1n" if arch == "dgcnn" else ("4x0n", "4x0n", "4x1n")
    model = models.build(arch, "pca", messages="irreps", hidden=hidden)
    assert (model.reps if arch == "dgcnn" else model.reps[2]) == tf.reps.as_reps(
        "4x0n+2x1n" if arch == "dgcnn" else "4x1n")


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_message_types_have_the_same_parameter_count(arch):
    counts = {m: sum(p.numel() for p in models.build(arch, "pca", messages=m).parameters())
              for m in MESSAGES}
    lo, hi = min(counts.values()), max(counts.values())
    assert hi <= 1.02 * lo, counts
    # the default is the tensor type, and the counts are those of today's default model
    assert counts["tensor"] == sum(p.numel() for p in models.build(arch, "pca").parameters())


def test_unknown_messages_and_misplaced_options_raise():
    for arch in ("pointnet2", "dgcnn"):
        with pytest.raises(ValueError, match="scalar.*vector.*tensor.*irreps"):
            models.build(arch, "pca", messages="spherical")
    with pytest.raises(ValueError, match="apply to .pointnet2. and .dgcnn. only"):
        models.build("tp", "cg", messages="scalar")
    with pytest.raises(ValueError, match="apply to .pointnet2. and .dgcnn. only"):
        models.build("pca", "pca", update_frames=True)
    with pytest.raises(ValueError, match="3 levels"):
        models.build("pointnet2", "pca", hidden="8x0n+4x1n")


# --------------------------------------------------------------------------- three-nn frames


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
@pytest.mark.parametrize("messages", ["tensor", "irreps"])
def test_three_nn_frames_models_are_o3_equivariant(arch, messages):
    torch.manual_seed(0)
    model = _perturb(models.build(arch, "three_nn", messages=messages, **SMALL[arch]))
    batch = _batch()
    assert equivariance_error(model, batch) < 1e-10
    # the frames are three_nn's on the model's k-NN graph (the three nearest of its candidates)
    pos = models._common.check_batch(batch)[0]
    edge_index = tf.graph.knn_graph(pos, SMALL[arch]["k"], batch.batch)
    ref = tf.frames.three_nn(pos, batch.batch)
    got = model.frames(pos, batch.batch, edge_index)
    assert torch.equal(got.matrices, ref.matrices)
    assert (got.det < 0).any() and (got.det > 0).any()  # handedness from the third neighbour


# ----------------------------------------------------------------------------- random frames


def test_random_flavour_is_listed_and_built():
    for arch in ("pointnet2", "dgcnn"):
        assert {"random", "three_nn"} <= set(models.FLAVOURS[arch])
        model = models.build(arch, "random", **SMALL[arch])
        assert model.frames.flavour == "random" and not model.augment


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_random_frames_are_fresh_per_call_and_reproducible_under_a_seed(arch):
    torch.manual_seed(0)
    model = models.build(arch, "random", **SMALL[arch]).eval()
    batch = _batch()
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(batch)
        b = model(batch)  # the next draw of the global RNG: other frames, other output
        torch.manual_seed(5)
        c = model(batch)
    assert torch.equal(a, c)
    assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_random_frames_model_is_equivariant_given_the_draw(arch, monkeypatch):
    """For one draw of frames ``R_i`` the model maps ``(g x, R_i g^T)`` to ``g f(x, R_i)``.

    Since ``R g^T`` is Haar-distributed whenever ``R`` is, ``f(g x)`` and ``g f(x)`` then have
    the same distribution: equivariance in distribution. The draws are injected through
    ``tf.frames.random``, which the flavour must call (identity or any other fixed frames would
    fail here)."""
    torch.manual_seed(0)
    model = _perturb(models.build(arch, "random", **SMALL[arch])).double().eval()
    batch = _batch()
    pos = batch.pos.double()
    frames = random_orthogonal(pos.shape[0], generator=torch.Generator().manual_seed(7))
    calls = []

    def fake_random(n, d=3, *, generator=None, dtype=None, device=None):
        calls.append(n)
        return tf.Frames(current.to(dtype=dtype, device=device))

    monkeypatch.setattr(tf.frames, "random", fake_random)
    with torch.no_grad():
        current = frames
        base = _run(model, batch, pos)
        for g, t, s in _group_elements():
            current = frames @ g.T
            out = _run(model, batch, s * pos @ g.T + t)
            assert float((out - base @ g.T).abs().max()) < 1e-10 * max(1.0, base.abs().max())
            current = frames  # the same draw without moving the frames along: not equivariant
            out = _run(model, batch, s * pos @ g.T + t)
            assert float((out - base @ g.T).abs().max()) > 1e-3
    assert calls == [pos.shape[0]] * 5


def _mean_abs_cos(model, batch, pos, ref, seeds):
    """Mean over draws and points of ``|cos(f(x)_i, n_i)|`` with ``n_i`` an equivariant
    reference direction (the PCA normal, sign-free)."""
    vals = []
    with torch.no_grad():
        for s in seeds:
            torch.manual_seed(s)
            out = torch.nn.functional.normalize(_run(model, batch, pos), dim=-1)
            vals.append((out * ref).sum(-1).abs().mean())
    return float(torch.stack(vals).mean())


def test_random_frames_statistic_is_invariant_in_distribution():
    """An invariant statistic of the output distribution, ``E |cos(f(x)_i, n_i)|``, is the same
    for ``x`` and ``g x`` (with ``g n_i``) up to sampling noise (12 draws: standard error about
    0.006), while a fixed-frame model that is not equivariant (``plain``, what a bug that
    used identity frames would give) moves it by about 0.2."""
    batch = _batch()
    pos = batch.pos.double()
    ref = tf.frames.pca(pos, k=8, batch=batch.batch).matrices[:, 2]
    g = random_orthogonal(1, det=-1, generator=torch.Generator().manual_seed(3))[0]
    seeds = range(100, 112)
    gaps = {}
    for flavour in ("random", "plain"):
        torch.manual_seed(0)
        model = models.build("pointnet2", flavour, **SMALL["pointnet2"]).double().eval()
        a = _mean_abs_cos(model, batch, pos, ref, seeds)
        b = _mean_abs_cos(model, batch, pos @ g.T, ref @ g.T, seeds)
        gaps[flavour] = abs(a - b)
    assert gaps["random"] < 0.03, gaps
    assert gaps["plain"] > 0.1, gaps


# --------------------------------------------------------------------- frames refined in models


def _updates(model):
    return [model.update0, model.update1] if hasattr(model, "update0") else list(model.updates)


def _assert_updates_move_frames(model, batch):
    """The perturbed FrameUpdates are far from the identity (so the tests below can fail)."""
    seen = []
    hooks = [u.register_forward_hook(lambda mod, inp, out: seen.append((inp[1], out[1])))
             for u in _updates(model)]
    with torch.no_grad():
        _run(model.double().eval(), batch, batch.pos.double())
    for h in hooks:
        h.remove()
    assert len(seen) == len(_updates(model)) >= 2
    for old, new in seen:
        assert (old.matrices - new.matrices).abs().amax(dim=(1, 2)).median() > 0.1


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
@pytest.mark.parametrize("flavour, method", [("pca", True), ("pca", "quaternion"),
                                             ("pca", "axis_angle"), ("learned", "gram_schmidt")])
def test_refined_frames_models_are_o3_equivariant(arch, flavour, method):
    torch.manual_seed(0)
    model = _perturb(models.build(arch, flavour, update_frames=method, **SMALL[arch]))
    expected = "gram_schmidt" if method is True else method
    assert model.update_frames == expected and model.options["update_frames"] == method
    assert all(u.method == expected for u in _updates(model))
    batch = _batch()
    _assert_updates_move_frames(model, batch)
    assert equivariance_error(model, batch) < 1e-10


def test_update_frames_needs_frames_and_a_known_method():
    for flavour in ("plain", "augment"):
        with pytest.raises(ValueError, match="identity frames"):
            models.build("dgcnn", flavour, update_frames=True)
    with pytest.raises(ValueError, match="gram_schmidt.*quaternion"):
        models.build("pointnet2", "pca", update_frames="euler")
    assert models.build("dgcnn", "pca").updates is None
    assert models.build("pointnet2", "pca", update_frames=False).update0 is None


def test_untrained_frame_updates_are_the_identity():
    """FrameUpdate starts at ``U = I``: a freshly built model with refinement computes what the
    model without it computes (same weights elsewhere)."""
    batch = _batch()
    for arch in ("pointnet2", "dgcnn"):
        torch.manual_seed(0)
        plain = models.build(arch, "pca", **SMALL[arch]).double().eval()
        refined = models.build(arch, "pca", update_frames=True, **SMALL[arch]).double().eval()
        refined.load_state_dict(plain.state_dict(), strict=False)
        with torch.no_grad():
            a = _run(plain, batch, batch.pos.double())
            b = _run(refined, batch, batch.pos.double())
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_dgcnn_re_expresses_earlier_outputs_in_the_refined_frames():
    """Every layer's output reaches the final concatenation with its world-frame content
    unchanged, written in the final (refined) frames: ``rho(R_final R_k^T) h_k``. Mixing frames
    would keep the model equivariant (each block is still a set of invariants) but change what
    the numbers mean, so equivariance alone cannot catch it."""
    torch.manual_seed(0)
    model = _perturb(models.build("dgcnn", "pca", messages="irreps", update_frames="quaternion",
                                  **SMALL["dgcnn"])).double().eval()
    batch = _batch()
    conv_calls, mix_in = [], []
    for conv in model.convs:
        conv.register_forward_hook(
            lambda mod, args, kwargs, out: conv_calls.append((out.relu(), kwargs["frames"])),
            with_kwargs=True)
    model.mix.register_forward_hook(lambda mod, inp, out: mix_in.append(inp[0]))
    with torch.no_grad():
        _run(model, batch, batch.pos.double())
    final = conv_calls[-1][1]
    c = model.reps.dim
    assert mix_in[0].shape[-1] == len(model.convs) * c
    for k, (h, frames) in enumerate(conv_calls):
        world = tf.nn.to_global(h, frames, model.reps)
        torch.testing.assert_close(mix_in[0][:, k * c:(k + 1) * c],
                                   tf.nn.to_local(world, final, model.reps), rtol=0, atol=1e-12)
    # the frames did change between layers (else the check above would be trivial)
    assert (conv_calls[0][1].matrices - final.matrices).abs().max() > 0.1


def test_pointnet2_uses_the_refined_frames_downstream():
    """The second and third set-abstraction layers and the head see the refined frames."""
    torch.manual_seed(0)
    model = _perturb(models.build("pointnet2", "pca", update_frames=True,
                                  **SMALL["pointnet2"])).double().eval()
    batch = _batch()
    refined, conv_frames = [], {}
    model.update0.register_forward_hook(lambda mod, inp, out: refined.append(out[1]))
    model.update1.register_forward_hook(lambda mod, inp, out: refined.append(out[1]))
    for name in ("conv1", "conv2"):
        getattr(model, name).register_forward_hook(
            lambda mod, args, kwargs, out, name=name: conv_frames.__setitem__(name,
                                                                              kwargs["frames"]),
            with_kwargs=True)
    with torch.no_grad():
        _run(model, batch, batch.pos.double())
    assert torch.equal(conv_frames["conv1"][0].matrices, refined[0].matrices)
    assert torch.equal(conv_frames["conv2"][0].matrices, refined[1].matrices)


@pytest.mark.parametrize("arch", ["pointnet2", "dgcnn"])
def test_parameter_counts_with_refined_frames(arch):
    """The FrameUpdates add the same number of parameters to every message type."""
    base = {m: sum(p.numel() for p in models.build(arch, "pca", messages=m).parameters())
            for m in MESSAGES}
    refined = {m: sum(p.numel() for p in models.build(arch, "pca", messages=m,
                                                      update_frames=True).parameters())
               for m in MESSAGES}
    extra = {m: refined[m] - base[m] for m in MESSAGES}
    assert len(set(extra.values())) == 1 and extra["tensor"] > 0, extra
    assert max(refined.values()) <= 1.02 * min(refined.values())


def test_load_round_trip_with_messages_and_refined_frames(tmp_path):
    from examples._normals_io import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    trained = _perturb(models.build("dgcnn", "pca", messages="irreps", update_frames="quaternion",
                                    **SMALL["dgcnn"]), scale=0.1)
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "arch": "dgcnn", "flavour": "pca",
                "options": trained.options, "model": trained.state_dict(), "epoch": 3}, path)
    torch.manual_seed(1)
    model = models.load(str(path))
    assert (model.messages, model.update_frames) == ("irreps", "quaternion")
    assert model.options == trained.options
    assert isinstance(model.reps, tf.Irreps)
    batch = _batch()
    torch.testing.assert_close(model(batch), trained.eval()(batch), rtol=0, atol=0)
