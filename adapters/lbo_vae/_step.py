"""One training step of the LBO-VAE: forward passes, goals, barrier, optimizer step, rollback."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from constraint_sched import Phase, SchedulerCollection
from constraint_sched.adapters.lbo_vae._goals import (
    PERTURBATION_STD,
    Goal,
    GoalInputs,
    compute,
    group_tree,
)
from constraint_sched.adapters.lbo_vae._model import LBOVAE, PatchDiscriminator
from constraint_sched.adapters.lbo_vae._schedules import calibrated
from constraint_sched.adapters.torch import LBOObjective, RollbackGuard, TorchScheduler

Recheck = Literal["full", "posterior"]
"""What a step evaluates again after the optimizer step (`Stepper`'s ``recheck``)."""

_LATENT: Final = frozenset({"mu", "logvar", "core_dims"})
"""The `GoalInputs` fields the encoder alone gives: a barrier reading only these is cheap."""

_CHEAP: Final = _LATENT | {"x", "recon"}
"""The fields a plain VAE's forward gives (encoder, one decode): `Stepper.cheap_inputs`."""

EMA_DECAY = 0.9
"""The decay of `Stepper.norm_ema`, the running mean of the gradient norms that clipping uses."""


class StepResult(NamedTuple):
    """What one step did; every tensor stays on the device (no host synchronisation).

    Attributes:
        loss: The barrier loss before the step (plain MSE while calibrating).
        groups: The top-level group scores after the step, in `Stepper.group_names`
            order (all 1 while calibrating; before the step with
            ``recheck="posterior"``); a stale group's from its last evaluation.
        bottleneck: The index of the smallest group, when ``groups`` is read.
        rejected: Whether the step was rolled back (a 0-d bool tensor).
        metrics: Every goal's raw metric after the step (of the model kept); with
            ``recheck="posterior"``, the goals that read only the posterior after
            the step and the others before it; on a step that did not evaluate
            the costly groups (``refresh``), their last values.
    """

    loss: torch.Tensor
    groups: torch.Tensor
    bottleneck: torch.Tensor
    rejected: torch.Tensor
    metrics: dict[str, torch.Tensor]


def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A horizontal flip and a colour jitter of up to 20% (brightness, contrast, saturation)."""
    b = x.shape[0]

    def factor() -> torch.Tensor:
        u = torch.rand((b, 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype)
        return 0.8 + 0.4 * u

    y = torch.flip(x, dims=(3,)) * factor()
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor() + mean
    grey = y.mean(dim=1, keepdim=True)
    y = (y - grey) * factor() + grey
    return y.clamp(0.0, 1.0)


class Stepper:
    """Runs the LBO-VAE's training steps; holds nothing but the parts it wires together.

    A step (LBO.md, section 1): the goals' raw metrics on the batch, their
    scores under the schedulers' current bounds, the barrier loss
    ``-log(min group)``, an optimizer step, then the same batch (same noise)
    again with the updated model: a non-finite loss or a group at 0 rolls the
    step back (weights and optimizer state, with no host synchronisation) and
    counts it as rejected; with ``barriers`` given, so does a step that takes
    a barrier goal (the KL) past its ceiling or further past it. Accepted
    steps' metrics go to the schedulers. With ``recheck="posterior"`` only
    the encoder runs again (`check`); with ``refresh`` above 1 the costly
    groups are evaluated on one step in ``refresh`` (and whenever they would
    be the bottleneck), their last metrics standing in between. The
    objective works on log scores, so a goal far past its bound keeps its
    gradient.
    While a scale is still being calibrated (``auto``, LBO.md section 3) the
    step trains on plain pixel MSE instead. The discriminator is trained at a
    tenth of the learning rate, on every other step with ``refresh=1`` and
    on the steps that evaluate every group otherwise.

    Args:
        vae: The model.
        disc: The discriminator.
        goals: The goal table.
        schedulers: The adapter over the goals' schedulers (every goal with a
            scheduled bound); other goals are scored with their own spec.
        optimizer: The VAE's optimizer.
        disc_optimizer: The discriminator's optimizer.
        barriers: The scheduled goals whose bound a step may not cross (see
            `crossed`): the KL halves.
        agree: Makes the replicas of a distributed run agree on a step's
            reject flag before anything acts on it (rejected on one rank,
            rejected on all); None alone.
        features: The frozen feature extractor of the ``perceptual`` goal
            (`VGGFeatures`), whose maps of ``x`` and of the reconstruction
            `inputs` adds to the bundle; None when the goals have no
            ``perceptual`` goal.
        met: The level at which each constraint goal counts as fully met
            (`met_levels`): its score is ``min(1, score / level)``. Goals
            not named (the objective) are scored as they are.
        clip: Clip each step's gradient norm to ``clip`` times the running
            mean of the norms before (`norm_ema`, an exponential mean over
            about 10 steps, restarted when calibration ends), so that a
            steep score (a barrier near its bound) cannot give one step
            the weight of hundreds in Adam's moments; None: no clipping.
            Under ``torch.distributed`` each rank clips its own gradient
            before the ranks' gradients are averaged.
        refresh: Evaluate the costly groups (those whose goals read more
            than a plain VAE's forward gives: the swap, the perturbed and
            core-only decodes, the augmented copy, the discriminator) on one
            step in ``refresh``, and on the first step after `start_epoch`;
            on the steps between, their last raw metrics, scored under the
            current bounds, stand in for them, and only the cheap groups
            (the reconstruction, the KL) are evaluated afresh. A step whose
            bottleneck would be a stale group evaluates every group afresh
            (a host read of the bottleneck's index, on any device; under
            ``agree``, the replicas refresh together). The
            schedulers observe each goal when it is evaluated. The
            discriminator trains on a full step at most every other step.
            1: every group on every step.
        recheck: What is evaluated again after the optimizer step:
            ``"posterior"`` (the default: the encoder alone, `check`: the
            step is rolled back when the parameters or the posterior are
            not finite or a barrier is crossed; the schedulers get the
            updated posterior's goals and the forward's others) or
            ``"full"`` (what the step's forward evaluated: the reject
            decision reads every group evaluated; the schedulers and the
            step's result get the updated model's metrics). Calibration
            steps always run the whole forward again.
    """

    def __init__(
        self,
        vae: LBOVAE,
        disc: PatchDiscriminator,
        goals: Sequence[Goal],
        schedulers: TorchScheduler,
        optimizer: torch.optim.Optimizer,
        disc_optimizer: torch.optim.Optimizer,
        barriers: Sequence[str] = (),
        agree: Callable[[torch.Tensor], torch.Tensor] | None = None,
        features: nn.Module | None = None,
        met: Mapping[str, float] | None = None,
        clip: float | None = 1.5,
        recheck: Recheck = "posterior",
        refresh: int = 4,
    ) -> None:
        self.vae, self.disc, self.goals = vae, disc, tuple(goals)
        self.schedulers = schedulers
        self.optimizer, self.disc_optimizer = optimizer, disc_optimizer
        self.objective = LBOObjective(group_tree(self.goals))
        self.group_names = self.objective.names
        self.guard = RollbackGuard(vae, optimizer)
        self.disc_guard = RollbackGuard(disc, disc_optimizer)
        self._scheduled = frozenset(schedulers.names)
        self._fixed = {g.name: g.spec for g in self.goals if g.name not in self._scheduled}
        self.barriers = tuple(n for n in barriers if n in self._scheduled)
        self.agree = agree
        self.features = features
        self.met = dict(met or {})
        """The constraint goals' levels (`met_levels`), by goal name."""
        self._log_met = {name: math.log(level) for name, level in self.met.items()}
        self.clip = clip
        if recheck not in ("full", "posterior"):
            raise ValueError(f"Stepper: recheck must be 'full' or 'posterior', got {recheck!r}")
        self.recheck: Recheck = recheck
        if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 1:
            raise ValueError(f"Stepper: refresh must be an integer of 1 or more, got {refresh!r}")
        self.refresh = refresh
        cheap = {g.group[0] for g in self.goals if set(g.reads) <= _CHEAP}
        cheap -= {g.group[0] for g in self.goals if not set(g.reads) <= _CHEAP}
        self._cheap_goals = [g for g in self.goals if g.group[0] in cheap]
        self._costly = frozenset(g.name for g in self.goals if g.group[0] not in cheap)
        self._costly_groups = tuple(n not in cheap for n in self.group_names)
        self._stale: dict[str, torch.Tensor] | None = None  # the costly goals' last metrics
        self._since_full = 0
        self._disc_wait = 1  # steps since the discriminator last trained, before this one
        latent = [g for g in self.goals if g.reads and set(g.reads) <= _LATENT]
        walls = [g for g in self.goals if g.name in self.barriers]
        # What `check` evaluates: the barriers, and the scheduled goals the posterior gives.
        self._checked = [g for g in self.goals if g in walls or
                         (g in latent and g.name in self._scheduled)]  # fmt: skip
        self._full_check = any(g not in latent for g in walls)  # a barrier reads an image
        self.norm_ema = torch.zeros(())
        """The running mean of the clipped gradient norms (0: none yet); in checkpoints."""
        core = schedulers.core
        self._calibrated = calibrated(core) if isinstance(core, SchedulerCollection) else ()
        self.steps = 0

    def calibrating(self) -> bool:
        """Whether a calibrated bound is still undiscovered (train on pixel MSE meanwhile).

        The ``auto`` scales and the calibrated boxes are found over the first
        steps; the KL ceiling's discovery lasts the whole first epoch (its max
        counts the calibration steps too), and the fixed scales are given.
        """
        sched = self.schedulers
        return any(sched.phase_of(n) is Phase.DISCOVERY for n in self._calibrated)

    def start_epoch(self) -> None:
        """Evaluate every group afresh on the next step (an epoch's first; a resumed run's too).

        The discriminator trains on that step too: what a step does depends
        on nothing an epoch's checkpoint leaves out, so a resumed run trains
        as the uninterrupted one.
        """
        self._stale = None
        self._disc_wait = 1

    def cheap_inputs(self, x: torch.Tensor, noise: torch.Tensor) -> GoalInputs:
        """What a plain VAE's forward gives (`_CHEAP`): the posterior and the reconstruction.

        The bundle's other fields hold stand-ins of the right shapes (the
        reconstruction, the core means, zero logits) that no cheap goal reads.
        """
        vae = self.vae
        mu, logvar = vae.encode(x)
        recon = vae.decode(vae.reparameterize(mu, logvar, noise))
        image, zero = recon.detach(), x.new_zeros(x.shape[0])
        return GoalInputs(
            x=x,
            recon=recon,
            recon_core=image,
            swap=image,
            x2=image,
            core_perturbed=image,
            detail_perturbed=image,
            mu=mu,
            logvar=logvar,
            core_dims=vae.core_dims,
            mu_augmented_core=vae.split(mu.detach())[0],
            d_recon=zero,
            d_swap=zero,
        )

    def inputs(
        self, x: torch.Tensor, noise: torch.Tensor, perturb: torch.Tensor, perm: torch.Tensor
    ) -> GoalInputs:
        """Every tensor the goals read (LBO.md, section 6), for one batch and one noise draw."""
        vae = self.vae
        mu, logvar = vae.encode(x)
        z = vae.reparameterize(mu, logvar, noise)
        core, detail = vae.split(z)
        recon = vae.decode(z)
        swap = vae.decode(vae.join(core, detail[perm]))
        p_core, p_detail = vae.split(perturb)
        images = torch.cat(
            [
                vae.decode(vae.join(core, torch.zeros_like(detail))),
                vae.decode(vae.join(core + PERTURBATION_STD * p_core, detail)),
                vae.decode(vae.join(core, detail + PERTURBATION_STD * p_detail)),
            ]
        )
        recon_core, core_perturbed, detail_perturbed = images.chunk(3)
        mu_aug, _ = vae.encode(augment(x))
        d_out = self.disc(torch.cat([recon, swap]))
        d_recon, d_swap = d_out.chunk(2)
        features_x = features_recon = None
        if self.features is not None:  # the perceptual goal's; x's need no graph
            with torch.no_grad():
                features_x = self.features(x)
            features_recon = self.features(recon)
        return GoalInputs(
            x=x,
            recon=recon,
            recon_core=recon_core,
            swap=swap,
            x2=x[perm],
            core_perturbed=core_perturbed,
            detail_perturbed=detail_perturbed,
            mu=mu,
            logvar=logvar,
            core_dims=vae.core_dims,
            mu_augmented_core=vae.split(mu_aug)[0],
            d_recon=d_recon,
            d_swap=d_swap,
            features_x=features_x,
            features_recon=features_recon,
        )

    def _zero_missing_gradients(self) -> None:
        """A zero gradient for each VAE parameter the backward did not reach.

        The full loss's backward reaches every parameter (with zeros through
        the groups that are not the bottleneck), and AdamW steps a parameter
        with a zero gradient (its momentum, its weight decay) but skips one
        with none: so that the bottleneck's backward alone trains exactly as
        the full loss's, the parameters it did not reach get zeros.
        """
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None and p.requires_grad:
                    p.grad = torch.zeros_like(p)

    def _clip_gradients(self, *, active: bool) -> None:
        """Clip the VAE's gradient norm to ``clip`` x `norm_ema`, on the device (no host sync)."""
        assert self.clip is not None
        grads = [p.grad for p in self.vae.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self.norm_ema.device != norm.device:
            self.norm_ema = self.norm_ema.to(norm.device)
        if not active:  # calibration trains on another loss: its norms say nothing
            self.norm_ema = torch.zeros_like(norm)
            return
        ema = torch.where(self.norm_ema > 0, self.norm_ema, norm)
        factor = (self.clip * ema / norm.clamp_min(1e-12)).clamp_max(1.0)
        factor = torch.where(torch.isfinite(factor), factor, torch.ones_like(factor))
        torch._foreach_mul_(grads, factor)
        clipped = torch.where(torch.isfinite(norm), norm * factor, ema)
        self.norm_ema = EMA_DECAY * ema + (1.0 - EMA_DECAY) * clipped

    def crossed(
        self, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """Whether a step took a barrier goal past its bound, or further past it (0-d bool).

        The barrier goals (`barriers`, the KL halves under their shared
        ceiling) hold their bound as a barrier, not a penalty: a step may not
        cross it. A step that only moves back towards a bound it is already
        past (after a squeeze, say) is kept, so a squeeze is followed, not
        frozen. Same batch, same noise: the comparison is the step's alone.
        """
        sched = self.schedulers
        crossed = torch.zeros((), dtype=torch.bool, device=next(iter(before.values())).device)
        for name in self.barriers:
            past = sched.violation(name, after[name])
            crossed = crossed | ((past > 0) & (past > sched.violation(name, before[name])))
        return crossed

    def log_scores(self, metrics: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every goal's log score: scheduled goals under their current (tensor) bounds.

        The objective works in log space (`LBOObjective` with ``log=True``):
        a goal far past its bound keeps pulling back instead of sitting,
        gradient-free, at the floor. A constraint goal at or above its
        ``met`` level scores 1 (log 0).
        """
        sched = self.schedulers
        scores = {
            name: sched.log_score(name, value)
            if name in self._scheduled
            else self._fixed[name].log_score(value)
            for name, value in metrics.items()
        }
        return {
            name: (value - self._log_met[name]).clamp_max(0.0) if name in self._log_met else value
            for name, value in scores.items()
        }

    def __call__(self, x: torch.Tensor) -> StepResult:
        """One training step on batch ``x``."""
        vae = self.vae
        b = x.shape[0]
        noise = vae.draw_noise(x)
        perturb = vae.draw_noise(x)
        perm = torch.roll(torch.arange(b, device=x.device), 1)
        self.disc.eval()  # scoring only: spectral norm's power iteration stays put
        calibrating = self.calibrating()
        self.guard.snapshot()
        before: dict[str, torch.Tensor] = {}
        full = calibrating or self.refresh == 1 or self._stale is None
        full = full or self._since_full + 1 >= self.refresh
        if calibrating:  # the metrics are read after the step
            inputs = self.inputs(x, noise, perturb, perm)
            loss = F.mse_loss(inputs.recon, x)
            groups = torch.ones(len(self.group_names), device=x.device)
            bottleneck = torch.zeros((), dtype=torch.long, device=x.device)
        else:
            if not full:  # the cheap groups afresh, the costly ones' last metrics
                assert self._stale is not None
                inputs = self.cheap_inputs(x, noise)
                before = {**self._stale, **compute(self._cheap_goals, inputs)}
                scores = self.log_scores(before)
                with torch.no_grad():
                    result = self.objective(scores, log=True)
                index = int(result.bottleneck)  # the one host read of a lazy step
                full = self._costly_groups[index]  # a stale group would be it: refresh
                if self.agree is not None:  # the replicas take the same path
                    full = bool(self.agree(torch.tensor(full, device=x.device)))
            if full:
                inputs = self.inputs(x, noise, perturb, perm)
                before = compute(self.goals, inputs)
                self._stale = {n: v.detach() for n, v in before.items() if n in self._costly}
                scores = self.log_scores(before)
            if x.device.type == "cpu" or not full:
                # The same loss and gradient, back-propagated through the bottleneck group
                # alone (LBOObjective.group_loss): reading its index costs nothing here.
                if full:
                    with torch.no_grad():
                        result = self.objective(scores, log=True)
                    index = int(result.bottleneck)
                loss = self.objective.group_loss(scores, index, log=True)
            else:  # no host read per step on an accelerator: the full loss
                result = self.objective(scores, log=True)
                loss = result.loss
            groups, bottleneck = result.groups.detach(), result.bottleneck
        self._since_full = 0 if full else self._since_full + 1
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self._zero_missing_gradients()
        if self.clip is not None:
            self._clip_gradients(active=not calibrating)
        self.optimizer.step()
        with torch.no_grad():
            if calibrating or (self.recheck == "full" and full):  # the whole forward again
                after = self.inputs(x, noise, perturb, perm)
                metrics = compute(self.goals, after)
                fakes = (after.recon, after.swap)
                if calibrating:  # only a non-finite loss rejects a calibration step
                    rejected = ~torch.isfinite(F.mse_loss(after.recon, x))
                else:
                    result = self.objective(self.log_scores(metrics), log=True)
                    groups, bottleneck = result.groups, result.bottleneck
                    rejected = result.reject | self.crossed(before, metrics)
            elif self.recheck == "full":  # a lazy step: its cheap forward again
                after = self.cheap_inputs(x, noise)
                metrics = {**before, **compute(self._cheap_goals, after)}
                result = self.objective(self.log_scores(metrics), log=True)
                groups, bottleneck = result.groups, result.bottleneck
                rejected = result.reject | self.crossed(before, metrics)
                fakes = None
            else:  # what the reject decision reads: the encoder alone
                latent, after = self.check(x, noise, perturb, perm, inputs)
                metrics = {**{n: v.detach() for n, v in before.items()}, **latent}
                rejected = ~self._finite(latent, after) | self.crossed(before, latent)
                fakes = (inputs.recon.detach(), inputs.swap.detach()) if full else None
        if self.agree is not None:
            rejected = self.agree(rejected)
        self.guard.restore_if(rejected)
        observed = self._scheduled if full else self._scheduled - self._costly  # calibrating: full
        self.schedulers.observe(
            {n: v for n, v in metrics.items() if n in observed}, accepted=~rejected
        )
        self.schedulers.reject(rejected)
        self._disc_wait += 1
        # With refresh 1 every step is full: every other step, as always; otherwise the full
        # steps, at most every other step.
        every_other = self.steps % 2 == 0 if self.refresh == 1 else self._disc_wait >= 2
        if full and every_other:
            if fakes is None:  # the updated model's recon and swap, from its posterior
                fakes = self._fakes(after, noise, perm)
            self._train_disc(x, *fakes, rejected)
            self._disc_wait = 0
        self.steps += 1
        return StepResult(loss.detach(), groups, bottleneck, rejected, metrics)

    def check(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        perturb: torch.Tensor,
        perm: torch.Tensor,
        inputs: GoalInputs,
    ) -> tuple[dict[str, torch.Tensor], GoalInputs]:
        """The updated model's posterior and what reads only it, same batch, same noise (no graph).

        What the reject decision reads, and nothing more: the updated
        posterior (the encoder runs again; no decoder does) and the barriers
        (the KL halves), which read only it. A barrier that reads an image
        gets the full forward. The scheduled goals that read only the
        posterior (the KL halves, the latent statistics) are evaluated on it
        too: the schedulers observe the updated model's values of those.

        Returns:
            The barriers' and the latent scheduled goals' metrics, and
            ``inputs`` with the updated model's posterior (``mu``,
            ``logvar``; everything with the full forward).
        """
        if self._full_check:
            inputs = self.inputs(x, noise, perturb, perm)
        else:
            mu, logvar = self.vae.encode(x)
            inputs = attrs.evolve(inputs, mu=mu, logvar=logvar)
        return compute(self._checked, inputs), inputs

    def _finite(self, after: Mapping[str, torch.Tensor], inputs: GoalInputs) -> torch.Tensor:
        """Whether the updated parameters, posterior and barrier metrics are finite (0-d bool)."""
        norms = torch._foreach_norm([p for p in self.vae.parameters()])
        posterior = (inputs.mu.sum() + inputs.logvar.sum()).reshape(1)
        total = torch.stack([*norms, *after.values()]).sum() + posterior
        return torch.isfinite(total).all()

    def _fakes(
        self, inputs: GoalInputs, noise: torch.Tensor, perm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction and swap decoded from ``inputs``' posterior (no graph)."""
        with torch.no_grad():
            vae, z = self.vae, self.vae.reparameterize(inputs.mu, inputs.logvar, noise)
            core, detail = vae.split(z)
            recon, swap = vae.decode(torch.cat([z, vae.join(core, detail[perm])])).chunk(2)
        return recon, swap

    def _train_disc(
        self, x: torch.Tensor, recon: torch.Tensor, swap: torch.Tensor, rejected: torch.Tensor
    ) -> None:
        # A rejected step's images (NaN, say) must not train the discriminator
        # either: its update is undone on the device like the VAE's.
        disc = self.disc
        self.disc_guard.snapshot()
        disc.train()
        real = disc(x)
        fake = disc(torch.cat([recon, swap]).detach())
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.disc_optimizer.step()
        self.disc_guard.restore_if(rejected)
        disc.eval()


def modules(vae: LBOVAE, disc: PatchDiscriminator) -> list[nn.Module]:
    """The trained modules, in checkpoint order."""
    return [vae, disc]
