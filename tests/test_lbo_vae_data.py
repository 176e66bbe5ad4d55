"""The LBO-VAE trainer's data: procedural shapes and their swap scores, digits, image folders."""

from __future__ import annotations

import doctest
import io
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from constraint_sched.adapters.lbo_vae import _data, _images, _shapes  # noqa: E402
from constraint_sched.adapters.lbo_vae._data import (  # noqa: E402
    APPEARANCE_FACTORS,
    DATASETS,
    SHAPE_KINDS,
    SIZES,
    STRUCTURE_FACTORS,
    ImageSet,
    digits,
    folder,
    load,
    render,
    render_mask,
    shape_recovery,
    shapes,
    swap_scores,
)

Factors = dict[str, Any]  # factor name -> tensor

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def rows(factors: Factors, index: Any) -> Factors:
    return {key: value[index] for key, value in factors.items()}


def scores(images: Any, x1: Factors, x2: Factors) -> tuple[float, float]:
    structure, appearance = swap_scores(images, x1, x2)
    return float(structure), float(appearance)


# --- shapes --------------------------------------------------------------------------------


def test_shapes_images_are_float_rgb_in_the_unit_range() -> None:
    data = shapes(64, image_size=24, seed=3)
    assert isinstance(data, ImageSet)
    assert data.name == "shapes"
    assert len(data) == 64
    assert data.image_size == 24
    assert data.images.shape == (64, 3, 24, 24)
    assert data.images.dtype == torch.float32
    assert data.images.is_contiguous()
    assert float(data.images.min()) >= 0.0
    assert float(data.images.max()) <= 1.0


def test_shapes_are_deterministic_from_the_seed() -> None:
    a, b, c = shapes(32, seed=7), shapes(32, seed=7), shapes(32, seed=8)
    assert torch.equal(a.images, b.images)
    assert a.factors is not None
    assert b.factors is not None
    assert c.factors is not None
    for key in a.factors:
        assert torch.equal(a.factors[key], b.factors[key])
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.factors["x"], c.factors["x"])


def test_shapes_default_size_and_a_single_image() -> None:
    assert shapes(1).images.shape == (1, 3, 32, 32)


def test_shapes_factors_have_their_ranges_and_every_kind_appears() -> None:
    data = shapes(512, seed=11)
    f = data.factors
    assert f is not None
    assert set(f) == set(STRUCTURE_FACTORS) | set(APPEARANCE_FACTORS)
    assert f["shape"].dtype == torch.int64
    assert f["shape"].shape == (512,)
    assert set(f["shape"].tolist()) == set(range(len(SHAPE_KINDS)))
    assert SHAPE_KINDS == ("circle", "square", "triangle", "cross")
    for key in ("size", "x", "y"):
        assert f[key].dtype == torch.float32
        assert f[key].shape == (512,)
    assert bool((f["size"] >= 0.15).all())
    assert bool((f["size"] <= 0.30).all())
    for key in ("x", "y"):  # the shape stays inside the image
        assert bool((f[key] >= 1.35 * f["size"] - 1e-6).all())
        assert bool((f[key] <= 1 - 1.35 * f["size"] + 1e-6).all())
    for key in APPEARANCE_FACTORS:
        assert f[key].dtype == torch.float32
        assert f[key].shape == (512, 3)
        assert bool((f[key] >= 0).all())
        assert bool((f[key] <= 1).all())
    assert data.labels is not None
    assert torch.equal(data.labels, f["shape"])


def test_shapes_sizes_sets_the_size_range_and_keeps_every_shape_inside() -> None:
    default = shapes(64, seed=4)
    assert torch.equal(shapes(64, seed=4, sizes=SIZES).images, default.images)
    assert SIZES == (0.15, 0.30)
    big = shapes(256, seed=4, sizes=(0.3, 0.37))
    f = big.factors
    assert f is not None
    assert bool((f["size"] >= 0.3).all())
    assert bool((f["size"] <= 0.37).all())
    assert bool((render_mask(f, 32)[:, [0, -1], :] == 0).all())  # nothing is cut by the border
    assert bool((render_mask(f, 32)[:, :, [0, -1]] == 0).all())
    same = shapes(8, seed=4, sizes=(0.25, 0.25)).factors
    assert same is not None
    assert bool((same["size"] == 0.25).all())


def test_shapes_foreground_and_background_are_well_apart() -> None:
    f = shapes(2048, seed=5).factors
    assert f is not None
    assert float(torch.linalg.vector_norm(f["fg"] - f["bg"], dim=1).min()) >= 0.5


def test_shapes_images_are_their_rendered_factors() -> None:
    data = shapes(128, image_size=20, seed=2)
    assert data.factors is not None
    assert torch.equal(data.images, render(data.factors, data.factors, 20))


def test_render_mask_agrees_with_the_images() -> None:
    data = shapes(128, seed=4)
    f = data.factors
    assert f is not None
    mask = render_mask(f, 32)
    assert mask.shape == (128, 32, 32)
    assert mask.dtype == torch.float32
    assert float(mask.min()) >= 0.0
    assert float(mask.max()) <= 1.0
    images = data.images.permute(0, 2, 3, 1)  # (N, H, W, 3)
    fg = f["fg"][:, None, None, :].expand_as(images)
    bg = f["bg"][:, None, None, :].expand_as(images)
    inside, outside = mask == 1, mask == 0
    assert int(inside.sum()) > 128 * 20
    assert int(outside.sum()) > 128 * 300
    assert torch.allclose(images[inside], fg[inside])
    assert torch.allclose(images[outside], bg[outside])
    # Every image has a foreground: some pixel is fully inside its shape.
    assert bool(inside.flatten(1).any(dim=1).all())


@pytest.mark.parametrize(
    ("kind", "area"),
    [
        pytest.param(0, math.pi, id="circle"),
        pytest.param(1, (2 * 0.85) ** 2, id="square"),
        pytest.param(2, 3 * math.sqrt(3) / 4 * 1.4**2, id="triangle"),
        pytest.param(3, 2 * (2 * 1.1 * 2 * 0.38) - (2 * 0.38) ** 2, id="cross"),
    ],
)
def test_render_mask_draws_the_shape_with_its_area(kind: int, area: float) -> None:
    side, size = 64, 0.25
    factors = {
        "shape": torch.tensor([kind]),
        "size": torch.tensor([size]),
        "x": torch.tensor([0.5]),
        "y": torch.tensor([0.45]),
    }
    mask = render_mask(factors, side)[0]
    radius = size * side
    assert float(mask.sum()) == pytest.approx(area * radius**2, rel=0.02)
    columns = torch.arange(side) + 0.5
    centre_x = float((mask.sum(0) * columns).sum() / mask.sum())
    assert centre_x == pytest.approx(0.5 * side, abs=0.05)  # every shape is symmetric in x


def test_render_mask_of_one_row_is_that_row_of_the_batch() -> None:
    f = shapes(8, seed=9).factors
    assert f is not None
    batch = render_mask(f, 32)
    one = render_mask(rows(f, 3), 32)
    assert one.shape == (1, 32, 32)
    assert torch.equal(one[0], batch[3])
    assert render(rows(f, 3), rows(f, 5), 32).shape == (1, 3, 32, 32)


def test_render_mask_accepts_float64_and_numpy_like_factors() -> None:
    f = shapes(4, seed=1).factors
    assert f is not None
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in f.items()}
    assert torch.allclose(render_mask(as_double, 16), render_mask(f, 16), atol=1e-5)


STRUCTURE = {
    "shape": torch.tensor([0, 1]),
    "size": torch.tensor([0.2, 0.2]),
    "x": torch.tensor([0.5, 0.5]),
    "y": torch.tensor([0.5, 0.5]),
}


@pytest.mark.parametrize(
    ("factors", "image_size", "error", "match"),
    [
        pytest.param(
            {k: v for k, v in STRUCTURE.items() if k != "size"},
            16,
            KeyError,
            r"\['size'\]",
            id="missing-size",
        ),
        pytest.param(
            {**STRUCTURE, "shape": torch.tensor([0, 4])},
            16,
            ValueError,
            r"factors\['shape'\].*\[0, 4\]",
            id="kind-too-large",
        ),
        pytest.param(
            {**STRUCTURE, "shape": torch.tensor([0.0, 1.0])},
            16,
            ValueError,
            r"factors\['shape'\] must hold integers",
            id="kind-float",
        ),
        pytest.param(
            {**STRUCTURE, "x": torch.tensor([0.5])},
            16,
            ValueError,
            r"one value per image.*\[2, 2, 1, 2\]",
            id="lengths-differ",
        ),
        pytest.param(
            STRUCTURE, 4, ValueError, r"image_size must be an integer >= 8, got 4", id="too-small"
        ),
        pytest.param(
            STRUCTURE,
            16.0,
            ValueError,
            r"image_size must be an integer >= 8, got 16.0",
            id="float-size",
        ),
    ],
)
def test_render_mask_errors(factors: Factors, image_size: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        render_mask(factors, image_size)  # type: ignore[arg-type]


def test_render_errors_name_the_colours() -> None:
    with pytest.raises(KeyError, match="'bg'"):
        render(STRUCTURE, {"fg": torch.zeros(2, 3)}, 16)
    with pytest.raises(ValueError, match=r"factors\['fg'\] must hold 2 RGB colours.*\(3, 3\)"):
        render(STRUCTURE, {"fg": torch.zeros(3, 3), "bg": torch.zeros(2, 3)}, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"n": 0}, r"shapes: n must be an integer >= 1, got 0", id="n-zero"),
        pytest.param({"n": True}, r"shapes: n must be an integer >= 1, got True", id="n-bool"),
        pytest.param(
            {"n": 4, "image_size": 7},
            r"shapes: image_size must be an integer >= 8, got 7",
            id="size",
        ),
        pytest.param(
            {"n": 4, "seed": -1}, r"shapes: seed must be an integer >= 0, got -1", id="seed"
        ),
        pytest.param(
            {"n": 4, "seed": 1.5}, r"shapes: seed must be an integer >= 0, got 1.5", id="seed-float"
        ),
        pytest.param(
            {"n": 4, "sizes": (0.2, 0.4)},
            r"shapes: sizes must satisfy 0 < low <= high <= 0\.370 .*got \(0\.2, 0\.4\)",
            id="sizes-too-big",
        ),
        pytest.param(
            {"n": 4, "sizes": (0.3, 0.2)},
            r"sizes must satisfy .*got \(0\.3, 0\.2\)",
            id="sizes-order",
        ),
        pytest.param({"n": 4, "sizes": (0.0, 0.2)}, r"sizes must satisfy", id="sizes-zero"),
        pytest.param(
            {"n": 4, "sizes": 0.2},
            r"sizes must be two numbers \(low, high\), got 0\.2",
            id="sizes-one",
        ),
        pytest.param({"n": 4, "sizes": ("a", "b")}, r"sizes must be two numbers", id="sizes-text"),
        pytest.param({"n": 4, "sizes": (0.1, float("nan"))}, r"sizes must satisfy", id="sizes-nan"),
    ],
)
def test_shapes_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shapes(**kwargs)


# --- swap scores ---------------------------------------------------------------------------


def pair(seed: int, n: int, side: int) -> tuple[Factors, Factors]:
    x1 = shapes(n, image_size=side, seed=seed).factors
    x2 = shapes(n, image_size=side, seed=seed + 1).factors
    assert x1 is not None
    assert x2 is not None
    return x1, x2


@settings(max_examples=25)
@given(seed=seeds, side=st.sampled_from([16, 24, 32]))
def test_swap_scores_sanity_over_batches(seed: int, side: int) -> None:
    x1, x2 = pair(seed, 16, side)
    perfect = scores(render(x1, x2, side), x1, x2)
    identity = scores(render(x1, x1, side), x1, x2)
    reversed_ = scores(render(x2, x2, side), x1, x2)
    assert perfect[0] > 0.999
    assert perfect[1] > 0.999
    assert identity[0] > 0.999
    assert identity[1] < 0.5
    assert reversed_[0] < 0.5
    assert reversed_[1] > 0.75


@settings(max_examples=40)
@given(seed=seeds, side=st.sampled_from([16, 32]))
def test_swap_scores_per_pair(seed: int, side: int) -> None:
    x1, x2 = pair(seed, 1, side)
    perfect = scores(render(x1, x2, side), x1, x2)
    identity = scores(render(x1, x1, side), x1, x2)
    reversed_ = scores(render(x2, x2, side), x1, x2)
    for value in (*perfect, *identity, *reversed_):
        assert 0.0 <= value <= 1.0
    assert perfect[0] > 0.999
    assert perfect[1] > 0.999
    assert identity[0] > 0.999
    assert identity[1] <= perfect[1]
    assert reversed_[0] <= perfect[0]
    # Structure is the squared correlation of the two masks when x2 comes back.
    m1, m2 = render_mask(x1, side).flatten(), render_mask(x2, side).flatten()
    correlation = float(torch.corrcoef(torch.stack([m1, m2]))[0, 1])
    assert reversed_[0] == pytest.approx(correlation**2, abs=1e-4)
    # Appearance ignores where the colours are: x1's shape or x2's in x2's colours.
    # x2 in x2's colours differs from the ideal swap by the areas only: per channel, the
    # 1-Wasserstein distance of the masks' values times the colour contrast |fg - bg|.
    masks_w1 = float((m1.sort().values - m2.sort().values).abs().mean())
    contrast = float((x2["fg"] - x2["bg"]).abs().mean())
    assert reversed_[1] == pytest.approx(max(0.0, 1 - 3 * contrast * masks_w1), abs=1e-4)


def test_swap_scores_degrade_smoothly_with_blur_and_noise() -> None:
    x1, x2 = pair(100, 64, 32)
    ideal = render(x1, x2, 32)
    blurred = torch.nn.functional.avg_pool2d(ideal, 3, 1, 1, count_include_pad=False)
    noisy = (
        ideal + 0.1 * torch.randn(ideal.shape, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    for degraded in (blurred, noisy):
        structure, appearance = scores(degraded, x1, x2)
        assert 0.5 < structure < 0.999
        assert 0.6 < appearance < 0.999


def test_swap_structure_ignores_colours_and_a_flat_image_has_none() -> None:
    x1, x2 = pair(3, 8, 32)
    swapped_colours = {"fg": x2["bg"], "bg": x2["fg"]}
    inverted = render(x1, swapped_colours, 32)
    assert scores(inverted, x1, x2)[0] > 0.999
    flat = torch.full((8, 3, 32, 32), 0.5)
    assert scores(flat, x1, x2)[0] == 0.0


def test_swap_scores_are_0d_tensors_that_do_not_depend_on_the_batch_order() -> None:
    x1, x2 = pair(21, 12, 32)
    swapped = 0.5 * render(x1, x2, 32) + 0.5 * render(x2, x1, 32)
    structure, appearance = swap_scores(swapped, x1, x2)
    assert structure.shape == ()
    assert appearance.shape == ()
    assert structure.dtype == torch.float32
    assert appearance.dtype == torch.float32
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    again = swap_scores(swapped[order], rows(x1, order), rows(x2, order))
    assert float(again[0]) == pytest.approx(float(structure), abs=1e-6)
    assert float(again[1]) == pytest.approx(float(appearance), abs=1e-6)


def test_swap_scores_accept_half_precision_images() -> None:
    x1, x2 = pair(8, 4, 16)
    structure, appearance = swap_scores(render(x1, x2, 16).half(), x1, x2)
    assert float(structure) > 0.99
    assert float(appearance) > 0.99


def test_swap_scores_errors() -> None:
    x1, x2 = pair(0, 4, 16)
    with pytest.raises(
        ValueError,
        match=r"swapped must be a tensor of shape \(B, 3, S, S\), got shape \(4, 3, 16, 12\)",
    ):
        swap_scores(torch.zeros(4, 3, 16, 12), x1, x2)
    with pytest.raises(ValueError, match=r"shape \(4, 1, 16, 16\)"):
        swap_scores(torch.zeros(4, 1, 16, 16), x1, x2)
    with pytest.raises(ValueError, match="structure_from describes 4 images, swapped holds 3"):
        swap_scores(torch.zeros(3, 3, 16, 16), x1, x2)
    with pytest.raises(ValueError, match=r"factors\['fg'\] must hold 4 RGB colours"):
        swap_scores(torch.zeros(4, 3, 16, 16), x1, rows(x2, slice(0, 2)))


# --- shape_recovery ------------------------------------------------------------------------


def with_shape(factors: Factors, kind: torch.Tensor) -> Factors:
    """``factors`` with their ``"shape"`` replaced by ``kind``."""
    return dict(factors, shape=kind)


@settings(max_examples=25)
@given(seed=seeds, side=st.sampled_from([24, 32]), shift=st.integers(1, 3))
def test_shape_recovery_is_1_for_the_images_and_0_for_every_shape_drawn_wrong(
    seed: int, side: int, shift: int
) -> None:
    data = shapes(12, image_size=side, seed=seed)
    factors = data.factors
    assert factors is not None
    assert float(shape_recovery(data.images, factors)) == 1.0
    wrong = with_shape(factors, (factors["shape"] + shift) % len(SHAPE_KINDS))
    assert float(shape_recovery(render(wrong, wrong, side), factors)) == 0.0


@settings(max_examples=25)
@given(seed=seeds, kind=st.integers(0, len(SHAPE_KINDS) - 1))
def test_shape_recovery_of_one_shape_drawn_for_all_is_that_shapes_share(
    seed: int, kind: int
) -> None:
    factors = shapes(16, seed=seed).factors
    assert factors is not None
    same = with_shape(factors, torch.full_like(factors["shape"], kind))
    share = float((factors["shape"] == kind).float().mean())
    assert float(shape_recovery(render(same, same, 32), factors)) == pytest.approx(share)


def test_shape_recovery_survives_a_slight_blur_and_is_a_0d_tensor_in_any_order() -> None:
    data = shapes(64, seed=5)
    factors = data.factors
    assert factors is not None
    blurred = torch.nn.functional.avg_pool2d(data.images, 3, 1, 1, count_include_pad=False)
    score = shape_recovery(blurred, factors)
    assert score.shape == ()
    assert score.dtype == torch.float32
    assert float(score) > 0.9
    order = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    assert float(shape_recovery(blurred[order], rows(factors, order))) == float(score)
    assert float(shape_recovery(data.images.half(), factors)) == 1.0


def test_shape_recovery_errors() -> None:
    factors = shapes(4, image_size=16).factors
    assert factors is not None
    with pytest.raises(
        ValueError,
        match=r"recon must be a tensor of shape \(B, 3, S, S\), got shape \(4, 3, 16, 12\)",
    ):
        shape_recovery(torch.zeros(4, 3, 16, 12), factors)
    with pytest.raises(ValueError, match="factors describe 4 images, recon holds 3"):
        shape_recovery(torch.zeros(3, 3, 16, 16), factors)
    with pytest.raises(KeyError, match="shape"):
        shape_recovery(
            torch.zeros(4, 3, 16, 16), {k: v for k, v in factors.items() if k != "shape"}
        )


# --- ImageSet ------------------------------------------------------------------------------


def test_image_set_is_frozen_and_has_a_short_repr() -> None:
    data = shapes(4, image_size=8)
    assert repr(data) == (
        "ImageSet(name='shapes', images=(4, 3, 8, 8), "
        "factors=['bg', 'fg', 'shape', 'size', 'x', 'y'], labels=(4,))"
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        data.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param(
            {"images": torch.zeros(2, 3, 8, 8, dtype=torch.float64)},
            r"images must be a float32 tensor.*torch.float64 tensor of shape \(2, 3, 8, 8\)",
            id="dtype",
        ),
        pytest.param(
            {"images": torch.zeros(2, 1, 8, 8)},
            r"images must be a float32 tensor of shape \(N >= 1, 3, H, W\)",
            id="channels",
        ),
        pytest.param({"images": torch.zeros(0, 3, 8, 8)}, r"\(0, 3, 8, 8\)", id="empty"),
        pytest.param({"images": [[0.0]]}, r"got \[\[0.0\]\]", id="not-a-tensor"),
        pytest.param(
            {"factors": {"x": torch.zeros(3)}},
            r"factors\['x'\] must be a tensor with 2 rows.*shape \(3,\)",
            id="factor-rows",
        ),
        pytest.param({"factors": {}}, r"factors must be None or a non-empty dict", id="no-factors"),
        pytest.param(
            {"labels": torch.zeros(())},
            r"labels must be a tensor with 2 rows.*shape \(\)",
            id="labels-0d",
        ),
    ],
)
def test_image_set_errors(kwargs: dict[str, Any], match: str) -> None:
    arguments = {"images": torch.zeros(2, 3, 8, 8), "name": "test", **kwargs}
    with pytest.raises(ValueError, match=match):
        ImageSet(**arguments)


# --- digits --------------------------------------------------------------------------------


def test_digits_are_scikit_learns_1797_images() -> None:
    pytest.importorskip("sklearn")
    data = digits(image_size=24)
    assert data.name == "digits"
    assert len(data) == 1797
    assert data.images.shape == (1797, 3, 24, 24)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) == 0.0
    assert 0.99 < float(data.images.max()) <= 1.0
    assert torch.equal(data.images[:, 0], data.images[:, 1])  # grey: three equal channels
    assert data.factors is None
    assert data.labels is not None
    assert data.labels.dtype == torch.int64
    assert set(data.labels.tolist()) == set(range(10))
    assert torch.equal(data.images, digits(image_size=24).images)


def test_digits_without_scikit_learn_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install scikit-learn.*constraint-sched\[digits\]"):
        digits()


# --- folder --------------------------------------------------------------------------------


def bands(size: tuple[int, int], colours: list[str], *, across: bool, mode: str = "RGB") -> Any:
    """An image of equal bands of colours, side by side (across) or stacked."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    width, height = size
    count = len(colours)
    for i, colour in enumerate(colours):
        if across:
            draw.rectangle((i * width // count, 0, (i + 1) * width // count, height), fill=colour)
        else:
            draw.rectangle((0, i * height // count, width, (i + 1) * height // count), fill=colour)
    return image.convert(mode)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    pytest.importorskip("PIL")
    from PIL import Image

    root = tmp_path / "pictures"
    (root / "sub").mkdir(parents=True)
    bands((90, 20), ["red", "lime", "blue"], across=True).save(root / "a_wide.png")
    bands((20, 90), ["red", "lime", "blue"], across=False).save(root / "b_tall.JPG", quality=95)
    rgba = Image.new("RGBA", (30, 30), (0, 0, 255, 0))  # fully transparent: over white
    rgba.save(root / "c_clear.png")
    Image.new("L", (16, 16), 128).save(root / "sub" / "d_grey.jpeg")
    bands((40, 40), ["red", "blue"], across=True, mode="P").save(root / "sub" / "e_palette.PNG")
    (root / "f_corrupt.png").write_bytes(b"this is not a PNG file")
    whole = io.BytesIO()
    bands((64, 64), ["red", "blue"], across=True).save(whole, format="JPEG")
    (root / "g_truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_loads_the_readable_images_centre_cropped(image_folder: Path) -> None:
    with pytest.warns(UserWarning, match="cannot be read as an image") as record:
        data = folder(image_folder, image_size=16)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "f_corrupt.png" in messages[0]
    assert "UnidentifiedImageError" in messages[0]
    assert "g_truncated.jpg" in messages[1]
    assert "OSError" in messages[1]
    assert all(w.category is UserWarning for w in record)
    assert record[0].filename == __file__  # the warning points at the caller

    assert data.name == f"folder:{image_folder}"
    assert data.factors is None
    assert data.labels is None
    assert data.images.shape == (5, 3, 16, 16)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0.0
    assert float(data.images.max()) <= 1.0
    wide, tall, clear, grey, palette = data.images
    lime = torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(wide[:, 8, 8], lime, atol=0.02)  # the middle band of three
    assert torch.allclose(wide[:, 0, 0], lime, atol=0.02)
    assert torch.allclose(wide[:, 15, 15], lime, atol=0.02)
    assert torch.allclose(tall[:, 1, 8], lime, atol=0.1)
    assert torch.allclose(tall[:, 14, 8], lime, atol=0.1)
    assert torch.allclose(clear, torch.ones(3, 16, 16))  # transparent over white
    assert torch.allclose(grey, torch.full((3, 16, 16), 128 / 255), atol=0.01)
    assert torch.allclose(palette[:, 8, 2], torch.tensor([1.0, 0.0, 0.0]), atol=0.02)
    assert torch.allclose(palette[:, 8, 13], torch.tensor([0.0, 0.0, 1.0]), atol=0.02)


def test_folder_scales_16_bit_grey_to_8_bits(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image

    ramp = np.repeat(np.linspace(0, 65535, 32).astype(np.uint16)[None, :], 32, axis=0)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode.startswith("I")
    image = folder(tmp_path, image_size=32).images[0]
    assert torch.allclose(image[0, 5], torch.linspace(0, 1, 32), atol=0.01)
    assert torch.equal(image[0], image[2])


def test_folder_is_deterministic_and_takes_the_size(image_folder: Path) -> None:
    with pytest.warns(UserWarning, match="cannot be read") as record:
        a = folder(str(image_folder), image_size=8)
    assert len(record) == 2
    with pytest.warns(UserWarning, match="cannot be read"):
        b = folder(image_folder, image_size=8)
    assert a.images.shape == (5, 3, 8, 8)
    assert torch.equal(a.images, b.images)


def test_folder_without_images_is_an_error_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(
        ValueError, match=rf"no readable PNG/JPEG image under '{tmp_path}' \(0 image file"
    ):
        folder(tmp_path)


def test_folder_of_unreadable_images_says_how_many_were_skipped(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    for name in ("one.png", "two.jpg"):
        (tmp_path / name).write_bytes(b"garbage")
    with (
        pytest.warns(UserWarning, match="one.png|two.jpg"),
        pytest.raises(ValueError, match=r"2 skipped as unreadable"),
    ):
        folder(tmp_path)


def test_folder_path_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*does not exist"):
        folder(missing)
    afile = tmp_path / "file.png"
    afile.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"file\.png.* is not a directory"):
        folder(afile)
    with pytest.raises(ValueError, match="folder: image_size must be an integer >= 8, got 2"):
        folder(tmp_path, image_size=2)


def test_folder_without_pillow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match="pip install Pillow"):
        folder(tmp_path)


# --- load ----------------------------------------------------------------------------------


def test_load_dispatches_by_name(image_folder: Path) -> None:
    assert DATASETS == ("shapes", "digits", "folder")
    data = load("shapes", n=10, image_size=16, seed=4)
    assert torch.equal(data.images, shapes(10, image_size=16, seed=4).images)
    assert load("shapes").images.shape == (4096, 3, 32, 32)
    with pytest.warns(UserWarning, match="cannot be read"):
        pictures = load("folder", data=image_folder, image_size=12)
    assert pictures.images.shape == (5, 3, 12, 12)


def test_load_digits() -> None:
    pytest.importorskip("sklearn")
    assert load("digits", image_size=8).images.shape == (1797, 3, 8, 8)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        pytest.param(
            "mnist",
            {},
            r"load: name must be one of \('shapes', 'digits', 'folder'\), got 'mnist'",
            id="unknown",
        ),
        pytest.param("folder", {}, r"'folder' dataset needs data", id="folder-without-data"),
        pytest.param(
            "shapes",
            {"data": "some/dir"},
            r"data .* goes with name='folder', got data='some/dir' with name='shapes'",
            id="data-with-shapes",
        ),
        pytest.param(
            "digits", {"data": Path("d")}, r"got data='d' with name='digits'", id="data-with-digits"
        ),
        pytest.param("shapes", {"n": -3}, r"shapes: n must be an integer >= 1, got -3", id="bad-n"),
    ],
)
def test_load_errors(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load(name, **kwargs)


def test_load_of_a_missing_folder() -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        load("folder", data="does-not-exist")


# --- docs ----------------------------------------------------------------------------------


def test_public_names_are_documented_and_their_examples_run() -> None:
    for name in _data.__all__:
        assert getattr(_data, name) is not None
    for name in _images.__all__ + _shapes.__all__:  # the loaders' module re-exports them
        assert getattr(_data, name) is getattr(
            _images if name in _images.__all__ else _shapes, name
        )
    for function in (ImageSet, shapes, render_mask, render, swap_scores, digits, folder, load):
        assert "Examples:" in (function.__doc__ or ""), function
    pytest.importorskip("PIL")
    pytest.importorskip("sklearn")
    attempted = 0
    for module in (_images, _shapes, _data):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__
        attempted += result.attempted
    assert attempted >= 15
