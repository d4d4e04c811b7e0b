"""noisynn's analog settings as real IBM aihwkit 1.2.0 layers (the C++ simulator, CPU): the cross-check's mapping.

aihwkit is a test / benchmark reference only (``make install`` installs the prebuilt wheel of
``../shared/wheels`` when it is there, ``make aihwkit`` builds one); the library never imports it. Sources cited
as aihwkit file:line are IBM/aihwkit at commit 4545f11 (``src/aihwkit/...`` and ``src/rpucuda/...``), whose Python
files equal the 1.2.0 wheel's line for line (only the copyright line differs).

The mapping, setting by setting (aihwkit ``IOParameters`` / ``MappingParameter`` -> noisynn ``AnalogIO``):

    forward.inp_res 1/126 (7 bits), out_res 1/510 (9 bits)  -> dac_bits 7, adc_bits 9
    forward.out_bound 12, out_noise                           -> out_bound 12, out_noise (units "tile": weights
                                                                 unscaled, weight_scaling_omega 0)
    forward.noise_management ABS_MAX                          -> input_range "dynamic"
    forward.bound_management NONE / ITERATIVE                 -> bound_management "none" / "iterative"
    forward.w_noise, w_noise_type ADDITIVE_CONSTANT / PCM_READ -> w_noise, w_noise_type "additive_constant" /
                                                                 "pcm_read"
    mapping.max_input_size, max_output_size 512               -> tile_size (512, 512)

An ``AnalogLinear`` built from such a config splits a layer into a ``TileModuleArray`` of ``InferenceTile``s
(``simulator/tiles/array.py``); each tile runs rpucuda's ``forwardVector`` per token
(``src/rpucuda/rpu_forward_backward_pass.cpp`` l.901-987). Its forward noise (output noise, w_noise) comes from
rpucuda's generator, seeded from the clock: compare distributions, never draws.
"""

from __future__ import annotations

import torch

# The settings every cross-check shares: aihwkit's IOParameters() defaults but no output noise.
CONVERTERS = dict(dac_bits=7, adc_bits=9, out_bound=12.0, out_noise=0.0, input_range="dynamic",
                  bound_management="none", tile_size=(512, 512), out_noise_units="tile")


def aihwkit_available() -> bool:
    try:
        import aihwkit.nn  # noqa: F401
        import aihwkit.simulator.configs  # noqa: F401
    except ImportError:
        return False
    return True


def analog_io(**settings):
    """noisynn's AnalogIO: ``CONVERTERS`` with ``settings`` replacing fields."""
    from noisynn.analog.mvm import AnalogIO

    return AnalogIO(**{**CONVERTERS, **settings})


def rpu_config(io=None, *, drift_compensation: bool = False):
    """aihwkit's ``InferenceRPUConfig`` with the forward and mapping of noisynn's ``io`` (``analog_io()`` if None).

    The noise model stays ``PCMLikeNoiseModel()`` (used only by program / drift); drift compensation is off unless
    asked for (then ``GlobalDriftCompensation()``, the default)."""
    from aihwkit.simulator.configs import InferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType, WeightNoiseType

    io = io or analog_io()
    cfg = InferenceRPUConfig()
    f = cfg.forward
    f.inp_res = 1 / (2 ** io.dac_bits - 2) if io.dac_bits else -1
    f.out_res = 1 / (2 ** io.adc_bits - 2) if io.adc_bits else -1
    f.out_bound = float(io.out_bound or -1)
    f.out_noise = float(io.out_noise)
    f.inp_noise = float(io.inp_noise)
    f.noise_management = {"dynamic": NoiseManagementType.ABS_MAX, "none": NoiseManagementType.NONE}[io.input_range]
    f.bound_management = {"none": BoundManagementType.NONE, "iterative": BoundManagementType.ITERATIVE}[
        io.bound_management]
    f.max_bm_factor, f.max_bm_res = int(io.max_bm_factor), float(io.max_bm_res)
    f.w_noise = float(io.w_noise)
    f.w_noise_type = {"none": WeightNoiseType.NONE, "additive_constant": WeightNoiseType.ADDITIVE_CONSTANT,
                      "pcm_read": WeightNoiseType.PCM_READ}[io.w_noise_type]
    if io.out_noise_units != "tile" or io.weight_scaling_omega:
        raise ValueError("the cross-check maps weights unscaled in the tile (aihwkit's default omega 0) only")
    cfg.mapping.max_input_size, cfg.mapping.max_output_size = (int(s) for s in io.tile_size)
    if not drift_compensation:
        cfg.drift_compensation = None
    return cfg


def aihwkit_linear(weight: torch.Tensor, cfg):
    """A bias-free aihwkit ``AnalogLinear`` holding ``weight`` (out x in, float32), in evaluation mode."""
    from aihwkit.nn import AnalogLinear

    out_features, in_features = weight.shape
    layer = AnalogLinear(in_features, out_features, bias=False, rpu_config=cfg)
    layer.set_weights(weight.detach().float().cpu())
    return layer.eval()


@torch.no_grad()
def aihwkit_forward(layer, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``layer(x)`` in batches of ``batch`` tokens (x: (N, in))."""
    return torch.cat([layer(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def analog_tiles(layer):
    """The ``InferenceTile``s of an aihwkit layer, in ``named_analog_tiles`` order (array[in tile][out tile])."""
    return [tile for _, tile in layer.named_analog_tiles()]


@torch.no_grad()
def capture_inputs(lm, names, ids: torch.Tensor, window: int = 512) -> dict[str, torch.Tensor]:
    """The inputs (N, in) the layers ``names`` see when the model reads ``ids`` in windows of ``window`` tokens
    (forward pre-hooks; one plain forward per window)."""
    seen: dict[str, list] = {n: [] for n in names}
    handles = [lm.model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: seen[n].append(a[0].detach().reshape(-1, a[0].shape[-1]).float().clone()))
        for n in names]
    try:
        for start in range(0, ids.numel(), window):
            lm.model(input_ids=ids[start:start + window][None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}
