"""RollbackGuard: a restored step leaves no trace, bit for bit, and restore_if never syncs."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from constraint_sched.adapters.torch._rollback import RollbackGuard  # noqa: E402

Factory = Callable[[Any], Any]

OPTIMIZERS: dict[str, Factory] = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "sgd-nesterov": lambda params: torch.optim.SGD(
        params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
    ),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "adamw-amsgrad": lambda params: torch.optim.AdamW(params, lr=1e-2, amsgrad=True),
}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=["where", "select"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test over both of restore_if's paths: torch.where per tensor (the CPU's) and the
    integer select over groups of tensors (the accelerators'), which the guard can take on CPU."""
    monkeypatch.setattr(RollbackGuard, "_select_on_cpu", request.param == "select")
    return str(request.param)


# --- helpers ------------------------------------------------------------------------------


def make_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    # momentum=None: the running averages use num_batches_tracked, so the int64 buffer matters.
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.BatchNorm1d(8, momentum=None),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 2),
    )


def make_pair(
    name: str, device: str = "cpu", factory: Factory | None = None
) -> tuple[Any, Any, Any, Any]:
    """Two identical (model, optimizer) pairs: one to roll back, one twin that never errs."""
    model = make_model().to(device)
    twin = copy.deepcopy(model)
    factory = factory or OPTIMIZERS[name]
    return model, factory(model.parameters()), twin, factory(twin.parameters())


def batch(i: int, device: str = "cpu") -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(1000 + i)
    return (
        torch.randn(8, 4, generator=gen).to(device),
        torch.randn(8, 2, generator=gen).to(device),
    )


def train_step(model: Any, opt: Any, i: int, scale: float = 1.0) -> Any:
    model.train()
    x, y = batch(i, next(model.parameters()).device.type)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y) * scale
    loss.backward()
    opt.step()
    return loss.detach()


def bits(t: Any) -> Any:
    """A tensor's bits as an integer tensor, so NaN compares equal to the same NaN."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    t = torch.view_as_real(t.detach()) if t.is_complex() else t.detach()
    return t.view(ints[t.element_size()]) if t.dtype != torch.bool else t


def same_bits(a: Any, b: Any) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def assert_state_dicts_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, entry in a["state"].items():
        other = b["state"][index]
        assert entry.keys() == other.keys(), index
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert same_bits(value, other[key]), (index, key)
            else:
                assert value == other[key], (index, key)


def assert_same(model: Any, opt: Any, twin: Any, twin_opt: Any) -> None:
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert same_bits(a, b), name
    assert_state_dicts_equal(opt.state_dict(), twin_opt.state_dict())


def state_copy(model: Any, opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A deep copy of everything a guard restores (tests only; the guard itself never copies)."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def assert_matches_copy(model: Any, opt: Any, saved: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for name, tensor in model.state_dict().items():
        assert same_bits(tensor, saved[0][name]), name
    assert_state_dicts_equal(opt.state_dict(), saved[1])


@contextlib.contextmanager
def host_reads_forbidden() -> Iterator[None]:
    """Make every Python-level read of a tensor's value raise, as a device sync would need."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("restore_if read a tensor's value on the host")

    names = [
        "item",
        "tolist",
        "cpu",
        "numpy",
        "to",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
    ]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch.Tensor, name, forbidden))
        yield


def bad_step(model: Any, opt: Any) -> None:
    """A step that leaves NaN and inf in parameters, buffers and optimizer state."""
    x, y = batch(999, next(model.parameters()).device.type)
    x[0, 0] = float("nan")  # NaN in the BatchNorm running statistics
    opt.zero_grad()
    (torch.nn.functional.mse_loss(model(x), y) * float("inf")).backward()
    opt.step()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
        model[0].weight[0, 1] = -float("inf")


# --- 1. bit-exact restore -------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_restore_is_bit_exact_and_training_goes_on_as_if_the_step_never_happened(name: str) -> None:
    model, opt, twin, twin_opt = make_pair(name)
    for i in range(3):
        train_step(model, opt, i)
        train_step(twin, twin_opt, i)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    params = [(p, p.data_ptr()) for p in model.parameters()]
    state_tensors = {id(v) for s in opt.state.values() for v in s.values()}

    train_step(model, opt, 100)  # discarded steps, on other batches
    train_step(model, opt, 101, scale=50.0)
    guard.restore()

    assert_same(model, opt, twin, twin_opt)
    assert all(
        a is b and a.data_ptr() == ptr
        for (a, ptr), b in zip(params, model.parameters(), strict=True)
    )
    assert all(
        a is b for a, b in zip(opt.param_groups[0]["params"], model.parameters(), strict=True)
    )
    assert {id(v) for s in opt.state.values() for v in s.values()} == state_tensors
    for i in range(3, 6):
        train_step(model, opt, i)
        train_step(twin, twin_opt, i)
        assert_same(model, opt, twin, twin_opt)


def test_restore_twice_restores_the_same_snapshot() -> None:
    model, opt, twin, twin_opt = make_pair("adam")
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    guard.restore()
    train_step(model, opt, 2)
    guard.restore()
    assert_same(model, opt, twin, twin_opt)


# --- 2. restore_if equals restore where True, changes nothing where False ---------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_restore_if_true_equals_restore(path: str, name: str) -> None:
    eager, eager_opt, cond, cond_opt = make_pair(name)
    guards = RollbackGuard(eager, eager_opt), RollbackGuard(cond, cond_opt)
    for model, opt, guard in zip((eager, cond), (eager_opt, cond_opt), guards, strict=True):
        train_step(model, opt, 0)
        guard.snapshot()
        train_step(model, opt, 1)
    guards[0].restore()
    guards[1].restore_if(torch.tensor(True))
    assert_same(eager, eager_opt, cond, cond_opt)
    train_step(eager, eager_opt, 2)
    train_step(cond, cond_opt, 2)
    assert_same(eager, eager_opt, cond, cond_opt)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_restore_if_false_leaves_everything_untouched(path: str, name: str) -> None:
    model, opt, _, _ = make_pair(name)
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    bad_step(model, opt)
    after = state_copy(model, opt)
    guard.restore_if(torch.tensor(False))
    assert_matches_copy(model, opt, after)
    assert torch.isnan(model[1].running_mean).any()  # the NaN really was there, and stays


# --- 3. NaN and inf are undone exactly ---------------------------------------------------------


@pytest.mark.parametrize("form", ["restore", "restore_if"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_that_writes_nan_and_inf_is_fully_undone(path: str, name: str, form: str) -> None:
    model, opt, twin, twin_opt = make_pair(name)
    for i in range(2):
        train_step(model, opt, i)
        train_step(twin, twin_opt, i)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    bad_step(model, opt)
    state = [v for s in opt.state.values() for v in s.values() if v.is_floating_point()]
    assert not all(torch.isfinite(p).all() for p in [*model.parameters(), *state])
    assert torch.isnan(model[1].running_mean).any()

    if form == "restore":
        guard.restore()
    else:
        guard.restore_if(torch.tensor(True))
    assert_same(model, opt, twin, twin_opt)
    train_step(model, opt, 2)
    train_step(twin, twin_opt, 2)
    assert_same(model, opt, twin, twin_opt)


def random_bits(dtype: Any, shape: tuple[int, ...], gen: Any) -> Any:
    """A tensor whose bits are uniformly random (NaN payloads, denormals, -0.0 included)."""
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (*shape, size), dtype=torch.uint8, generator=gen)
    if dtype == torch.bool:
        return (raw[..., 0] % 2).bool()
    out = raw.view(dtype).reshape(shape)
    if out.is_floating_point() and out.numel() >= 5:
        specials = [float("nan"), -float("nan"), float("inf"), -float("inf"), -0.0]
        out.view(-1)[:5] = torch.tensor(specials, dtype=dtype)
    return out


class _Bits(torch.nn.Module):
    """Buffers of every dtype, random bits, and the layouts the select path must handle."""

    DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64)
    DTYPES += (torch.int32, torch.int16, torch.uint8, torch.bool, torch.complex64)

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)

        def bits_on(dtype: Any, shape: tuple[int, ...]) -> Any:
            return random_bits(dtype, shape, gen).to(device)

        for i, dtype in enumerate(self.DTYPES):
            self.register_buffer(f"b{i}", bits_on(dtype, (5, 3)))
        self.register_buffer("scalar", bits_on(torch.float64, ()))
        self.register_buffer("strided", bits_on(torch.float32, (4, 6))[:, ::2])
        self.register_buffer("wide", bits_on(torch.complex128, (3,)))  # 16-byte elements
        self.register_buffer("large", bits_on(torch.float32, (2**20 + 1,)))
        whole = bits_on(torch.float32, (10,))
        self.register_buffer("whole", whole)
        self.register_buffer("part", whole[2:6])  # overlaps `whole`


def scramble_and_select(module: Any, guard: Any, flags: tuple[Any, Any], sync_free: Any) -> None:
    """Scramble every buffer: restore_if(False) keeps it, restore_if(True) and restore undo it."""
    saved = {name: b.clone() for name, b in module.named_buffers()}
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for b in module.buffers():
            b.copy_(random_bits(b.dtype, tuple(b.shape), gen).to(b.device))
    changed = {name: b.clone() for name, b in module.named_buffers()}
    with sync_free():
        guard.restore_if(flags[0])
    for name, b in module.named_buffers():
        assert same_bits(b, changed[name]), name
    with sync_free():
        guard.restore_if(flags[1])
    for name, b in module.named_buffers():
        assert same_bits(b, saved[name]), name
    with torch.no_grad():
        for b in module.buffers():
            b.copy_(random_bits(b.dtype, tuple(b.shape), gen).to(b.device))
    guard.restore()
    for name, b in module.named_buffers():
        assert same_bits(b, saved[name]), name


def test_restore_if_is_exact_for_every_dtype_and_bit_pattern(path: str) -> None:
    module = _Bits()
    guard = RollbackGuard(module)
    guard.snapshot()
    by_where = {live.data_ptr() for _, live, _ in guard._wheres}
    if path == "select":
        assert by_where == {b.data_ptr() for b in (module.wide, module.large, module.part)}
    else:
        assert not guard._selects
    flags = (torch.tensor(False), torch.tensor(True))
    scramble_and_select(module, guard, flags, host_reads_forbidden)


# --- 4. optimizer state created lazily after the snapshot ------------------------------------


def count_item_calls() -> tuple[Any, list[int]]:
    calls: list[int] = []
    item = torch.Tensor.item

    def counted(self: Any) -> Any:
        calls.append(1)
        return item(self)

    return mock.patch.object(torch.Tensor, "item", counted), calls


@pytest.mark.parametrize("name", ["sgd-momentum", "adamw-amsgrad"])
@pytest.mark.parametrize("form", ["restore", "restore_if"])
def test_state_created_after_the_snapshot_is_deleted_on_restore(name: str, form: str) -> None:
    model, opt, twin, twin_opt = make_pair(name)
    guard = RollbackGuard(model, opt)
    guard.snapshot()  # a fresh optimizer: no state yet
    train_step(model, opt, 100)
    assert len(opt.state) > 0

    patch, calls = count_item_calls()
    with patch:
        if form == "restore":
            guard.restore()
        else:
            guard.restore_if(torch.tensor(True))
    assert calls == ([] if form == "restore" else [1])  # restore_if read the flag once
    assert len(opt.state) == 0
    assert_same(model, opt, twin, twin_opt)
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    assert_same(model, opt, twin, twin_opt)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_restore_if_false_keeps_state_created_after_the_snapshot(name: str) -> None:
    model, opt, twin, twin_opt = make_pair(name)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard.restore_if(torch.tensor(False))
    assert len(opt.state) == len(list(model.parameters()))
    assert_same(model, opt, twin, twin_opt)
    # The next snapshot takes the new state in, and restore_if works without a host read again.
    guard.snapshot()
    train_step(model, opt, 1)
    with host_reads_forbidden():
        guard.restore_if(torch.tensor(True))
    assert_same(model, opt, twin, twin_opt)


# --- 5. no allocation per step in steady state ---------------------------------------------


def test_snapshot_buffers_are_allocated_once_and_reused() -> None:
    model, opt, _, _ = make_pair("adamw-amsgrad")
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    assert guard._allocations == 1
    train_step(model, opt, 0)  # creates the optimizer state: the next snapshot reallocates
    guard.snapshot()
    assert guard._allocations == 2
    buffers = list(guard._snaps)
    pointers = [t.data_ptr() for t in buffers]
    n_state = sum(len(s) for s in opt.state.values())
    assert len(buffers) == len(model.state_dict()) + n_state

    for i in range(1, 6):
        train_step(model, opt, i)
        guard.snapshot()
        guard.restore_if(torch.tensor(i % 2 == 0))
        guard.restore()
    assert guard._allocations == 2
    assert all(a is b for a, b in zip(guard._snaps, buffers, strict=True))
    assert [t.data_ptr() for t in guard._snaps] == pointers
    assert guard._host_reads == 0


# --- 6. restore_if reads nothing on the host ---------------------------------------------


@pytest.mark.parametrize("value", [True, False])
def test_restore_if_in_steady_state_reads_no_tensor_value(path: str, value: bool) -> None:
    model, opt, _, _ = make_pair("adam")
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    saved = state_copy(model, opt)
    bad_step(model, opt)
    after = state_copy(model, opt)
    flag = torch.tensor(value)
    with host_reads_forbidden():
        guard.restore_if(flag)
    assert_matches_copy(model, opt, saved if value else after)


def test_host_reads_forbidden_catches_a_read_of_the_flag() -> None:
    flag = torch.tensor(True)
    for read in (bool, float, int, lambda t: t.item(), lambda t: t.cpu(), lambda t: t.tolist()):
        with host_reads_forbidden(), pytest.raises(AssertionError, match="on the host"):
            read(flag)


# --- 7. errors -----------------------------------------------------------------------------


class _ListState(torch.optim.SGD):
    """An optimizer that keeps a list in its state, which cannot be restored without a copy."""

    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        for p in self.param_groups[0]["params"]:
            self.state[p]["history"] = [1.0]
        return loss


def test_errors() -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: RollbackGuard("net"), TypeError, r"model must be a torch\.nn\.Module, got str"),
        (lambda: RollbackGuard(model, model), TypeError, r"optimizer must be .*got Sequential"),
        (lambda: RollbackGuard(model, "adam"), TypeError, r"optimizer must be .*got str"),
        (lambda: RollbackGuard(model, [opt, 3]), TypeError, r"got int at index 1"),
        (
            lambda: RollbackGuard(model, (opt, opt)),
            ValueError,
            r"same optimizer twice, at index 0 and 1",
        ),
        (lambda: RollbackGuard(model, opt, buffers=1), TypeError, r"buffers must be a bool, got 1"),
        (
            lambda: RollbackGuard(model, opt).restore(),
            RuntimeError,
            r"restore\(\) called before snapshot\(\)",
        ),
        (
            lambda: RollbackGuard(model).restore_if(torch.tensor(True)),
            RuntimeError,
            r"restore_if\(\) called before snapshot",
        ),
    ]
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    cases += [
        (
            lambda: guard.restore_if(1.0),
            TypeError,
            r"flag must be a torch\.bool tensor or a bool, got float 1\.0",
        ),
        (
            lambda: guard.restore_if(torch.tensor(1.0)),
            TypeError,
            r"flag must be a torch\.bool tensor, got dtype torch\.float32",
        ),
        (
            lambda: guard.restore_if(torch.tensor([True, False])),
            ValueError,
            r"flag must be a bool tensor with one element, got shape \(2,\)",
        ),
        (
            lambda: guard.restore_if(torch.ones(0, dtype=torch.bool)),
            ValueError,
            r"one element, got shape \(0,\)",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


def test_a_flag_of_shape_one_is_accepted() -> None:
    model, opt, twin, twin_opt = make_pair("sgd-momentum")
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    guard.restore_if(torch.tensor([[True]]))
    assert_same(model, opt, twin, twin_opt)


def test_snapshot_refuses_optimizer_state_it_cannot_restore_without_a_deep_copy() -> None:
    model = make_model()
    opt = _ListState(model.parameters(), lr=0.1)
    train_step(model, opt, 0)
    with pytest.raises(TypeError, match=r"state\['history'\] of param 0 is a list"):
        RollbackGuard(model, opt).snapshot()


def test_host_state_with_a_flag_on_another_device_raises_and_changes_nothing() -> None:
    # A flag on the meta device stands in for an accelerator (see the CUDA tests for the real one).
    model, opt, _, _ = make_pair("adam")
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    after = state_copy(model, opt)
    with pytest.raises(
        ValueError, match=r"parameter '0\.weight' is a CPU tensor but flag is on meta"
    ):
        guard.restore_if(torch.ones((), dtype=torch.bool, device="meta"))
    assert_matches_copy(model, opt, after)


class _CountingSGD(torch.optim.SGD):
    """An optimizer that counts its steps in a Python int in its state."""

    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        for p in self.param_groups[0]["params"]:
            self.state[p]["count"] = self.state[p].get("count", 0) + 1
        return loss


@pytest.mark.parametrize("value", [True, False])
def test_python_values_in_state_are_restored_by_value_on_cpu(value: bool) -> None:
    model = make_model()
    opt = _CountingSGD(model.parameters(), lr=0.1, momentum=0.9)
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    saved = state_copy(model, opt)
    train_step(model, opt, 1)
    after = state_copy(model, opt)
    guard.restore_if(torch.tensor(value))
    assert_matches_copy(model, opt, saved if value else after)
    assert opt.state[model[0].weight]["count"] == (1 if value else 2)


def test_python_values_that_changed_with_a_flag_on_another_device_raise() -> None:
    model = make_model()
    opt = _CountingSGD(model.parameters(), lr=0.1, momentum=0.9)
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    with pytest.raises(
        ValueError, match=r"state\['count'\] of param 0 is a Python value \(int\) that changed"
    ):
        guard.restore_if(torch.ones((), dtype=torch.bool, device="meta"))
    assert opt.state[model[0].weight]["count"] == 2


# --- 8. several optimizers, buffers=False, odd parameters ------------------------------------


def test_several_optimizers_are_restored_together(path: str) -> None:
    def build() -> tuple[Any, Any, Any]:
        model = make_model()
        head = torch.optim.SGD(model[3].parameters(), lr=0.05, momentum=0.9)
        body = torch.optim.Adam([*model[0].parameters(), *model[1].parameters()], lr=1e-2)
        return model, head, body

    model, head, body = build()
    twin, twin_head, twin_body = build()

    def step(m: Any, opts: tuple[Any, Any], i: int) -> None:
        x, y = batch(i)
        for o in opts:
            o.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        for o in opts:
            o.step()

    step(model, (head, body), 0)
    step(twin, (twin_head, twin_body), 0)
    guard = RollbackGuard(model, [head, body])
    guard.snapshot()
    step(model, (head, body), 1)
    guard.restore_if(torch.tensor(True))
    assert_same(model, head, twin, twin_head)
    assert_same(model, body, twin, twin_body)
    step(model, (head, body), 2)
    step(twin, (twin_head, twin_body), 2)
    assert_same(model, body, twin, twin_body)


def test_buffers_false_restores_parameters_and_leaves_buffers_alone() -> None:
    model, opt, twin, twin_opt = make_pair("adam")
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt, buffers=False)
    guard.snapshot()
    train_step(model, opt, 1)
    stepped = {name: b.clone() for name, b in model.named_buffers()}
    guard.restore()
    for name, b in model.named_buffers():
        assert same_bits(b, stepped[name]), name
    assert int(model[1].num_batches_tracked) == 2
    assert not torch.equal(model[1].running_mean, twin[1].running_mean)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert same_bits(a, b)
    assert_state_dicts_equal(opt.state_dict(), twin_opt.state_dict())


class _WithUnused(torch.nn.Module):
    """The test model beside a layer that forward never uses, so it never gets a grad."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_model()
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x: Any) -> Any:
        return self.net(x)


def test_frozen_unused_and_extra_parameters(path: str) -> None:
    def build() -> tuple[Any, Any, Any]:
        model = _WithUnused()
        model.net[0].weight.requires_grad_(False)  # frozen: never in the optimizer state
        extra = torch.nn.Parameter(torch.ones(3))  # held by the optimizer, not by the model
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW([{"params": params}, {"params": [extra], "lr": 0.1}], lr=1e-2)
        return model, opt, extra

    def step(model: Any, opt: Any, extra: Any, i: int) -> None:
        x, y = batch(i)
        opt.zero_grad()
        (torch.nn.functional.mse_loss(model(x), y) + (extra**2).sum()).backward()
        opt.step()

    model, opt, extra = build()
    twin, twin_opt, twin_extra = build()
    step(model, opt, extra, 0)
    step(twin, twin_opt, twin_extra, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    step(model, opt, extra, 1)
    with torch.no_grad():
        model.net[0].weight.add_(1.0)  # frozen parameters are restored too
    guard.restore_if(torch.tensor(True))
    assert same_bits(extra, twin_extra)
    assert model.unused.weight not in opt.state
    assert_same(model, opt, twin, twin_opt)


class _Ema(torch.nn.Module):
    """A module that replaces its buffer by a new tensor at each forward, as some EMAs do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.register_buffer("ema", torch.zeros(2))

    def forward(self, x: Any) -> Any:
        out = self.lin(x)
        self.ema = 0.9 * self.ema + 0.1 * out.detach().mean(0)
        return out


@pytest.mark.parametrize("form", ["restore", "restore_if"])
def test_a_buffer_replaced_by_a_new_tensor_is_put_back(form: str) -> None:
    torch.manual_seed(0)
    model = _Ema()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    saved = state_copy(model, opt)
    original = model.ema
    train_step(model, opt, 1)
    assert model.ema is not original
    if form == "restore":
        guard.restore()
    else:
        guard.restore_if(torch.tensor(True))
    assert model.ema is original
    assert_matches_copy(model, opt, saved)


def test_a_parameter_whose_data_was_swapped_is_still_restored(path: str) -> None:
    model, opt, twin, twin_opt = make_pair("adam")
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    weight = model[0].weight
    weight.data = weight.data.clone()  # same Parameter, new memory
    guard.restore_if(torch.tensor(True))
    assert model[0].weight is weight
    assert_same(model, opt, twin, twin_opt)


def test_repr_counts_tensors_and_bytes() -> None:
    model = torch.nn.Linear(3, 2)  # 6 + 2 float32
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = RollbackGuard(model, opt)
    assert not guard.has_snapshot
    assert repr(guard) == "RollbackGuard(empty, optimizers=1, buffers=True)"
    guard.snapshot()
    assert guard.has_snapshot
    assert repr(guard) == "RollbackGuard(tensors=2, bytes=32, optimizers=1, buffers=True)"


# --- 9. property: any optimizer, any history, either form -----------------------------------


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    lr=st.sampled_from([1e-3, 1e-2, 0.3]),
    before=st.integers(0, 3),
    discarded=st.integers(1, 2),
    form=st.sampled_from(["restore", "where", "select"]),
)
def test_restore_is_bit_exact_for_any_history(
    name: str, lr: float, before: int, discarded: int, form: str
) -> None:
    def factory(params: Any) -> Any:
        opt = OPTIMIZERS[name](params)
        for group in opt.param_groups:
            group["lr"] = lr
        return opt

    model, opt, twin, twin_opt = make_pair(name, factory=factory)
    for i in range(before):
        train_step(model, opt, i)
        train_step(twin, twin_opt, i)
    guard = RollbackGuard(model, opt)
    with mock.patch.object(RollbackGuard, "_select_on_cpu", form == "select"):
        guard.snapshot()
        for i in range(discarded):
            train_step(model, opt, 50 + i, scale=10.0)
        if form == "restore":
            guard.restore()
        else:
            guard.restore_if(torch.tensor(True))
    train_step(model, opt, before)
    train_step(twin, twin_opt, before)
    assert_same(model, opt, twin, twin_opt)


# --- 10. CUDA: no synchronisation, and an honest error where one would be needed ------------


def set_sync_debug_mode(mode: int | str) -> None:
    with warnings.catch_warnings():  # "a prototype feature": said once, not our concern
        warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
        torch.cuda.set_sync_debug_mode(mode)


@contextlib.contextmanager
def sync_is_an_error() -> Iterator[None]:
    """Make every synchronising CUDA operation raise, for the duration of the block."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    try:
        set_sync_debug_mode("error")
        yield
    finally:
        set_sync_debug_mode(previous)


@cuda
@pytest.mark.parametrize("option", ["fused", "capturable"])
@pytest.mark.parametrize("value", [True, False])
def test_restore_if_on_cuda_does_not_synchronise(option: str, value: bool) -> None:
    def factory(params: Any) -> Any:
        return torch.optim.AdamW(params, lr=1e-2, **{option: True})

    model, opt, twin, twin_opt = make_pair("adamw", device="cuda", factory=factory)
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    loss = train_step(model, opt, 1, scale=10.0)
    after = state_copy(model, opt)
    flag = torch.isfinite(loss) if value else ~torch.isfinite(loss)  # computed on the device
    with sync_is_an_error():
        guard.restore_if(flag)
        guard.snapshot()
        guard.restore_if(flag)
    with sync_is_an_error(), pytest.raises(RuntimeError, match="synchronizing"):
        bool(flag)  # the mode does catch a read of the flag
    assert guard._host_reads == 0
    if value:
        assert_same(model, opt, twin, twin_opt)
    else:
        assert_matches_copy(model, opt, after)


@cuda
def test_restore_if_on_cuda_with_a_cpu_flag() -> None:
    model, opt, twin, twin_opt = make_pair(
        "adamw", device="cuda", factory=lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True)
    )
    train_step(model, opt, 0)
    train_step(twin, twin_opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    flag = torch.tensor(True)
    with sync_is_an_error():
        guard.restore_if(flag)  # the flag is on the host already: read it, restore eagerly
    assert guard._host_reads == 1
    assert_same(model, opt, twin, twin_opt)


@cuda
def test_restore_if_on_cuda_refuses_a_cpu_step_count() -> None:
    model, opt, _, _ = make_pair(
        "adam", device="cuda", factory=lambda p: torch.optim.Adam(p, lr=1e-2)
    )
    train_step(model, opt, 0)
    guard = RollbackGuard(model, opt)
    guard.snapshot()
    train_step(model, opt, 1)
    after = state_copy(model, opt)
    flag = torch.ones((), dtype=torch.bool, device="cuda")
    match = (
        r"optimizer 0 \(Adam\): state\['step'\] of param 0 is a CPU tensor but flag is on "
        r"cuda:0; use capturable=True or fused=True, or call restore\(\) after reading the flag"
    )
    with pytest.raises(ValueError, match=match):
        guard.restore_if(flag)
    assert_matches_copy(model, opt, after)
    guard.restore()  # the eager form still works
    assert opt.state[model[0].weight]["step"].item() == 1


@cuda
def test_restore_if_on_cuda_is_exact_for_every_dtype_and_bit_pattern() -> None:
    module = _Bits("cuda")
    guard = RollbackGuard(module)
    guard.snapshot()
    by_where = {live.data_ptr() for _, live, _ in guard._wheres}
    assert by_where == {b.data_ptr() for b in (module.wide, module.large, module.part)}
    flags = (
        torch.zeros((), dtype=torch.bool, device="cuda"),
        torch.ones((), dtype=torch.bool, device="cuda"),
    )
    scramble_and_select(module, guard, flags, sync_is_an_error)
