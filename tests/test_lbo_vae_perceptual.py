"""The perceptual goal: a VGG16 feature stack with torchvision's names, loaded from a local file.

Nothing here downloads anything or imports torchvision: every weights file is
written by the test, with random weights in torchvision's key layout.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from constraint_sched.adapters.lbo_vae import _perceptual  # noqa: E402
from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import TrainConfig, load_config  # noqa: E402
from constraint_sched.adapters.lbo_vae._goals import group_tree  # noqa: E402
from constraint_sched.adapters.lbo_vae._perceptual import (  # noqa: E402
    VGGFeatures,
    load_vgg_features,
)
from constraint_sched.adapters.lbo_vae._train import CHECKPOINT, Run  # noqa: E402

# Two steps an epoch, as in test_lbo_vae_train.py: a KL box small enough for so short a run.
TINY = TrainConfig(
    images=64, batch_size=32, epochs=2, calibration_steps=2, image_size=32,
    kl_squeeze_epochs=2, kl_lower=0.05, kl_healthy=0.2, kl_target=0.25,
)  # fmt: skip

# torchvision's vgg16: the index in ``features`` of each 3x3 convolution, with its channels.
CONVS = {
    0: (3, 64), 2: (64, 64),
    5: (64, 128), 7: (128, 128),
    10: (128, 256), 12: (256, 256), 14: (256, 256),
    17: (256, 512), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def quiet(message: str) -> None:
    """Swallow the run's messages."""


def random_vgg(seed: int = 0) -> dict[str, Any]:
    """The default extractor's state dict, random weights small enough to keep features tame."""
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in VGGFeatures().state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16-features.pth"
    torch.save(random_vgg(), path)
    return path


# -- torchvision's layout ----------------------------------------------------------------------


def test_the_names_and_shapes_are_torchvisions_vgg16() -> None:
    full = VGGFeatures("relu5_3").state_dict()
    expected = {}
    for index, (cin, cout) in CONVS.items():
        expected[f"features.{index}.weight"] = (cout, cin, 3, 3)
        expected[f"features.{index}.bias"] = (cout,)
    assert {k: tuple(v.shape) for k, v in full.items()} == expected
    assert list(full)[:4] == [
        "features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias",
    ]  # fmt: skip
    assert tuple(full["features.14.weight"].shape) == (256, 256, 3, 3)
    assert tuple(full["features.28.bias"].shape) == (512,)
    layers = VGGFeatures("relu5_3").features
    assert len(layers) == 30  # torchvision's 31 less its last max-pool
    assert [i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)] == [
        4, 9, 16, 23,
    ]  # fmt: skip


def test_the_default_extractor_ends_at_relu3_3() -> None:
    net = VGGFeatures()
    assert _perceptual.DEFAULT_LAYER == "relu3_3"
    assert len(net.features) == 16
    assert isinstance(net.features[15], torch.nn.ReLU)
    assert sorted({int(k.split(".")[1]) for k in net.state_dict()}) == [0, 2, 5, 7, 10, 12, 14]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 256, 8, 8)
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_grey_images_are_copied_to_three_channels_and_other_shapes_refused() -> None:
    net = VGGFeatures("relu1_2")
    grey = torch.rand(1, 1, 16, 16)
    assert torch.equal(net(grey), net(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 2, 16, 16\)"):
        net(torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="relu9_9"):
        VGGFeatures("relu9_9")


def test_the_inputs_are_normalised_with_imagenet_statistics() -> None:
    net = VGGFeatures("relu1_2")
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(net(x), net.features((x - mean) / std))
    assert "mean" not in net.state_dict()
    assert "std" not in net.state_dict()


# -- loading a file ----------------------------------------------------------------------------


def _full_vgg16(state: dict[str, Any]) -> dict[str, Any]:
    """A whole-vgg16-like dict: deeper features and a (small, fake) classifier to ignore."""
    deeper = VGGFeatures("relu5_3").state_dict()
    extra = {k: v for k, v in deeper.items() if k not in state}
    classifier = {"classifier.0.weight": torch.zeros(8, 16), "classifier.0.bias": torch.zeros(8)}
    return {**state, **extra, **classifier}


@pytest.mark.parametrize(
    "layout",
    ["features", "full_vgg16", "unprefixed", "float16"],
)
def test_a_weights_file_loads_and_the_gradient_reaches_the_input(
    tmp_path: Path, layout: str
) -> None:
    state = random_vgg(1)
    saved = {
        "features": state,
        "full_vgg16": _full_vgg16(state),
        "unprefixed": {k.removeprefix("features."): v for k, v in state.items()},
        "float16": {k: v.half() for k, v in state.items()},
    }[layout]
    path = tmp_path / "vgg.pth"
    torch.save(saved, path)
    net = load_vgg_features(path)
    loaded = net.state_dict()
    assert list(loaded) == list(state)
    for key, value in state.items():
        tolerance = {"atol": 1e-3, "rtol": 1e-3} if layout == "float16" else {}
        torch.testing.assert_close(loaded[key], value, **tolerance)
        assert loaded[key].dtype == torch.float32
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    features = net(x)
    assert features.shape == (2, 256, 8, 8)
    features.square().mean().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_the_device_argument_places_the_extractor(weights: Path) -> None:
    net = load_vgg_features(str(weights), device="cpu")
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    assert net.mean.device.type == "cpu"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-vgg16.pth"
    with pytest.raises(FileNotFoundError, match=r"no-such-vgg16\.pth.*does not exist"):
        load_vgg_features(missing)


def test_a_corrupt_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "corrupt-vgg16.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match=r"corrupt-vgg16\.pth.*cannot be read"):
        load_vgg_features(path)


def test_a_file_without_a_state_dict_is_named(tmp_path: Path) -> None:
    path = tmp_path / "list-vgg16.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match=r"list-vgg16\.pth.*holds a list, not a state dict"):
        load_vgg_features(path)


def test_the_first_missing_key_is_named_with_the_file(tmp_path: Path) -> None:
    state = random_vgg()
    del state["features.7.bias"], state["features.12.weight"]
    path = tmp_path / "partial-vgg16.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"partial-vgg16\.pth.*no key 'features\.7\.bias'"):
        load_vgg_features(path)


def test_another_networks_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match=r"resnet\.pth.*no key 'features\.0\.weight'"):
        load_vgg_features(path)


def test_a_wrong_shape_is_named_with_the_file_and_the_key(tmp_path: Path) -> None:
    state = random_vgg()
    state["features.5.weight"] = torch.zeros(64, 64, 3, 3)
    state["features.10.weight"] = torch.zeros(1)
    path = tmp_path / "vgg11-not-16.pth"
    torch.save(state, path)
    match = (
        r"vgg11-not-16\.pth.*'features\.5\.weight' has shape \(64, 64, 3, 3\).*\(128, 64, 3, 3\)"
    )
    with pytest.raises(ValueError, match=match):
        load_vgg_features(path)


def test_a_non_float_value_is_named(tmp_path: Path) -> None:
    state = random_vgg()
    state["features.0.bias"] = torch.zeros(64, dtype=torch.long)
    path = tmp_path / "ints.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"ints\.pth.*'features\.0\.bias'.*floating"):
        load_vgg_features(path)


def test_the_module_examples_run() -> None:
    result = doctest.testmod(_perceptual, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


# -- the configuration and the command line --------------------------------------------------


def test_the_option_is_off_by_default_and_checked() -> None:
    assert TrainConfig().perceptual_weights is None
    assert TrainConfig(perceptual_weights="vgg.pth").perceptual_weights == "vgg.pth"
    with pytest.raises(ValueError, match="perceptual_weights"):
        TrainConfig(perceptual_weights="")
    for bad in (3, Path("vgg.pth")):  # a wrong type: a TypeError, naming the type
        with pytest.raises(TypeError, match=rf"perceptual_weights .* \({type(bad).__name__}\)"):
            TrainConfig(perceptual_weights=bad)


def test_a_config_file_sets_the_weights(tmp_path: Path) -> None:
    path = tmp_path / "lbo-vae.toml"
    path.write_text('[train]\nperceptual_weights = "models/vgg16.pth"\n')
    assert load_config(path).perceptual_weights == "models/vgg16.pth"


def test_the_command_line_names_a_missing_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("[train]\nimages = 64\nbatch_size = 32\nepochs = 1\n")
    missing = tmp_path / "absent-vgg16.pth"
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--perceptual-weights", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lbo-vae: error: ")
    assert "absent-vgg16.pth" in err


# -- a run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perceptual_run(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Run:
    torch.set_num_threads(1)
    config = TINY.replace(perceptual_weights=str(weights))
    run = Run(config, tmp_path_factory.mktemp("run"), progress=False, print_=quiet)
    run.train()
    return run


def test_a_run_with_weights_trains_the_perceptual_goal(perceptual_run: Run, weights: Path) -> None:
    run = perceptual_run
    names = [g.name for g in run.goals]
    assert names[:3] == ["pixel", "edge", "perceptual"]
    assert len(names) == 30
    assert group_tree(run.goals)["recon"] == ["pixel", "edge", "perceptual"]
    assert run.features is not None
    assert run.stepper.features is run.features
    # Its scale was calibrated and its metric observed on every epoch.
    assert "perceptual" in run.schedulers.names
    value = run.schedulers.last_means["perceptual"]
    assert math.isfinite(value)
    assert value > 0
    assert run.collection["perceptual"].bound > 0
    assert [row["epoch"] for row in run.history] == [1, 2]
    # The extractor was not trained: its weights are still the file's.
    saved = torch.load(weights, weights_only=True)
    for key, tensor in run.features.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def test_a_steps_metrics_include_the_perceptual_goal(perceptual_run: Run) -> None:
    run = perceptual_run
    x = run.data.images[:32].to(run.device)
    b = x.shape[0]
    with torch.no_grad():
        inputs = run.stepper.inputs(
            x,
            run.vae.draw_noise(x),
            run.vae.draw_noise(x),
            torch.roll(torch.arange(b), 1),
        )
    assert inputs.features_x is not None
    assert inputs.features_recon is not None
    assert inputs.features_x.shape == (b, 256, 8, 8)
    from constraint_sched.adapters.lbo_vae._goals import compute

    metrics = compute(run.goals, inputs)
    assert float(metrics["perceptual"]) > 0


def test_a_perceptual_run_checkpoints_and_resumes(perceptual_run: Run, tmp_path: Path) -> None:
    run = perceptual_run
    state = torch.load(run.out / CHECKPOINT, weights_only=True)
    assert state["config"]["perceptual_weights"] == run.config.perceptual_weights
    assert not any(k.startswith("features.") for k in state["vae"])  # not the extractor's
    again = Run(run.config.replace(epochs=3), tmp_path, progress=False, print_=quiet)
    again.load(run.out / CHECKPOINT)
    assert again.epoch == 3
    assert [g.name for g in again.goals] == [g.name for g in run.goals]


def test_without_weights_the_goal_is_absent(tmp_path: Path) -> None:
    run = Run(TINY, tmp_path, progress=False, print_=quiet)
    assert run.features is None
    assert run.stepper.features is None
    assert "perceptual" not in [g.name for g in run.goals]
    assert "perceptual" not in run.schedulers.names
    assert group_tree(run.goals)["recon"] == ["pixel", "edge"]
