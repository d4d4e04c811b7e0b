"""The Explore tab of ``noisynn ui``: its layout and wiring (Gradio).

Controls (the CLI's device and converter flags among them), the clean-vs-noisy comparison, the growing curve,
sweeps, preview / full setting, Stop. Layout and wiring only: every number, text and figure comes from
``noisynn.ui.explore*``."""

from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import logging
import math
import tempfile
import time

from ..errors import NoisyNNError
from .setting import (MAX_NEW_TOKENS, PREVIEW_EVAL_TOKENS, PREVIEW_NEW_TOKENS, SIGMA_LOG_MAX, SIGMA_LOG_MIN,
                      TARGET_CHOICES, Cancelled, Setting, cli_command, noise_seed, read_log_sigma, sigma_from_slider,
                      whole_number_in, human_time, sigma_log_max)
from .figures import METRICS_HEADERS, entropy_figure, metrics_table, probability_figure, write_csv
from .explore import Explorer, noise_choices, result_rows, sweep_points
from .curve import DEFAULT_T_SECONDS, Curve
from .controls import flag_controls, given_flags, preset_placeholders, shown_for, sigma_meaning
from ..noise import NOISE_REGISTRY
from ..runs.runner import levels

log = logging.getLogger(__name__)

TIME_LOG_MAX = math.log10(10 * 365.25 * 86400)  # 10 years, in log10 seconds
SCALES = ["absolute", "relative", "relative_max", "relative_channel"]


@functools.lru_cache(maxsize=None)
def lenient_slider(gr):
    """A Slider whose value reaches the handler as typed (out of range, or None for an empty box), so the
    handler clamps or refuses it with a message; Gradio's own check would show 'Error' on every output.

    Gradio writes a .pyi stub next to the module of every Component subclass it sees defined; that hook is
    off while this one is made (nothing is written into the package).
    """
    from gradio import component_meta

    write_stub = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        class LenientSlider(gr.Slider):
            is_template = True  # drawn by the frontend's Slider

            def preprocess(self, payload):
                return payload
    finally:
        component_meta.create_or_modify_pyi = write_stub
    return LenientSlider


def guard(gr, status):
    """Decorator: NoisyNNError -> its message; anything else -> a short message (traceback only in the log);
    Cancelled (superseded by a newer request or Stop) -> a note, the outputs left as they were."""
    def message(fn, err):
        if isinstance(err, NoisyNNError):
            text = str(err)
        else:
            log.exception("ui handler %s failed", fn.__name__)
            text = f"internal error ({type(err).__name__}: {str(err)[:300]}); the server keeps running"
        gr.Warning(html.escape(text), title="Cannot do that")  # a toast, seen wherever the page is scrolled
        return {status: gr.update(value=f"⚠ {text}", elem_classes=["error"])}

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen_wrapper(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Cancelled:  # superseded: the next request (or Stop) says so in the status
                    yield {status: gr.update()}
                except Exception as err:  # noqa: BLE001 - shown to the user, logged with traceback
                    yield message(fn, err)
            return gen_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Cancelled:
                return {status: gr.update()}
            except Exception as err:  # noqa: BLE001
                return message(fn, err)
        return wrapper
    return wrap


def log10_or_min(x: float, hi: float = SIGMA_LOG_MAX) -> float:
    """log10 ``x`` within the slider's range [SIGMA_LOG_MIN, hi]; the bottom for x <= 0."""
    return min(max(math.log10(x), SIGMA_LOG_MIN), hi) if x > 0 else SIGMA_LOG_MIN


def _float_or(text, default: float) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


def flag_widget(gr, c, value, visible: bool = True, placeholder: str = "(CLI default)"):
    """One control for one CLI flag (``explore_flags.FlagControl``)."""
    common = {"label": c.flag, "info": c.help, "elem_id": c.elem_id, "visible": visible}
    if c.kind == "bool":
        return gr.Checkbox(bool(value), **common)
    if c.kind == "choice":
        return gr.Dropdown([""] + list(c.choices), value=value or "", **common)
    return gr.Textbox(value or "", placeholder=placeholder, max_lines=1, **common)


class ExploreTab:
    """Builds the tab inside an open ``gr.Blocks`` and wires it; ``setting_of(values)`` serves other tabs."""

    def __init__(self, gr, explorer: Explorer, defaults: Setting, flag_defaults: dict, status, runs_root: str):
        self.gr, self.explorer, self.defaults, self.status, self.runs_root = gr, explorer, defaults, status, runs_root
        Slider = lenient_slider(gr)
        self.controls_meta = flag_controls()
        with gr.Row(elem_id="explore-row", elem_classes=["stack-narrow"]):
            with gr.Column(scale=1, min_width=320, elem_id="controls-col"):
                self.model = gr.Dropdown([defaults.model], value=defaults.model, allow_custom_value=True,
                                         label="model", info="embedded alias, local folder, .gguf file or hub id",
                                         elem_id="model")
                self.noise = gr.Dropdown(noise_choices(), value=defaults.noise_type, label="noise type",
                                         elem_id="noise-type")
                self.meaning = gr.Markdown(sigma_meaning(defaults.noise_type, defaults.scale), elem_id="sigma-meaning")
                top = sigma_log_max(defaults.noise_type)
                self.log_sigma = Slider(SIGMA_LOG_MIN, top, value=log10_or_min(defaults.sigma, top), step=0.05,
                                        label="log10 sigma", elem_id="sigma-slider")
                self.sigma_text = gr.Markdown(f"sigma = **{sigma_from_slider(log10_or_min(defaults.sigma, top)):g}**",
                                              elem_id="sigma-value")
                self.committed = gr.State(log10_or_min(defaults.sigma, top))  # the last sigma released
                self.noise_state = gr.State(defaults.noise_type)  # the noise chosen before the current one
                self.shown: Setting | None = None  # the setting of the last complete result
                self.last = None  # that result: (the outputs shown, (clean, noisy) perplexity, mean noisy entropy)
                self.took: dict[tuple, float] = {}  # seconds of the last point per (noise, eval tokens, new tokens)
                # The buttons next to the slider: on the first screen at 1400x900 (issue 25), not below the controls.
                self.preview = gr.Checkbox(True, label=f"preview: {PREVIEW_EVAL_TOKENS} eval tokens, "
                                           f"{PREVIEW_NEW_TOKENS} new tokens (fast); untick for the full setting",
                                           elem_id="preview")
                self.live = gr.Checkbox(True, label="compute when the slider is released", elem_id="live")
                with gr.Row():
                    self.generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    self.full = gr.Button("Full setting", elem_id="full")
                    self.stop = gr.Button("Stop", variant="stop", elem_id="stop")
                self.scale = gr.Dropdown(SCALES, value=defaults.scale, label="scale", elem_id="scale",
                                         info="absolute: weight units; relative: x std(W); relative_max: x max|W|; "
                                              "relative_channel: x max|W| per output channel")
                self.targets = gr.CheckboxGroup(list(TARGET_CHOICES), value=list(defaults.targets), label="targets",
                                                elem_id="targets")
                self.blocks = gr.Textbox(defaults.blocks, label="blocks", info="attention/mlp of these blocks: all, "
                                         "or e.g. 0-9,20", elem_id="blocks")
                self.seed = gr.Number(defaults.seed, precision=0, label="seed", elem_id="seed",
                                      info="base seed; the realization's own seed is derived from it (64-bit, "
                                           "results.csv's seed column)")
                shown = shown_for(defaults.noise_type)
                self.flag_widgets = {}
                with gr.Accordion("device parameters (the CLI's flags; empty = its default)", open=True,
                                  elem_id="device-params"):
                    t0 = _float_or(flag_defaults.get("t_seconds"), DEFAULT_T_SECONDS)
                    self.time = Slider(0.0, round(TIME_LOG_MAX, 3), value=min(max(math.log10(max(t0, 1.0)), 0.0),
                                                                             TIME_LOG_MAX), step=0.05,
                                       label="log10 time after programming (s): 1 s to 10 years",
                                       visible="t_seconds" in shown, elem_id="time-slider")
                    self.time_text = gr.Markdown(f"read **{human_time(t0)}** after programming",
                                                 visible="t_seconds" in shown, elem_id="time-value")
                    for c in (c for c in self.controls_meta if c.group == "device"):
                        self.flag_widgets[c.dest] = flag_widget(gr, c, flag_defaults.get(c.dest), c.dest in shown)
                placeholders = preset_placeholders(flag_defaults.get("analog_preset"))
                for group, title, elem in (("converter", "converters: DAC, output noise, ADC", "converter-params"),
                                           ("attention", "analog attention: gain-cell KV cache", "attention-params")):
                    with gr.Accordion(f"{title} (the CLI's flags)", open=False, elem_id=elem):
                        for c in (c for c in self.controls_meta if c.group == group):
                            self.flag_widgets[c.dest] = flag_widget(gr, c, flag_defaults.get(c.dest), placeholder=
                                                                    placeholders.get(c.dest, "(CLI default)"))
                self.prompt = gr.Textbox(defaults.prompt, lines=2, label="prompt", elem_id="prompt")
                with gr.Row():
                    self.max_new = gr.Number(defaults.max_new_tokens, precision=0, label="max new tokens",
                                             info=f"1-{MAX_NEW_TOKENS} (full setting)", elem_id="max-new-tokens")
                    self.top_k = gr.Number(defaults.top_k, precision=0, label="top-k in chart", elem_id="top-k")
                    self.eval_tokens = gr.Number(defaults.eval_tokens, precision=0, label="eval tokens",
                                                 info="full setting", elem_id="eval-tokens")
                with gr.Row():
                    self.sweep_levels = gr.Number(5, precision=0, label="sweep: levels up to sigma",
                                                  elem_id="sweep-levels")
                    self.sweep = gr.Button("Sweep", elem_id="sweep")
            with gr.Column(scale=2, elem_id="results-col"):
                self.results_sigma = gr.Markdown("No results yet.", elem_id="results-sigma")
                with gr.Row(elem_classes=["stack-narrow"]):
                    self.clean_text = gr.Textbox(label="clean continuation", lines=5, interactive=False,
                                                 elem_id="clean-text")
                    self.noisy_text = gr.Textbox(label="noisy continuation", lines=5, interactive=False,
                                                 elem_id="noisy-text")
                with gr.Row(elem_classes=["stack-narrow"]):
                    self.prob_plot = gr.Plot(show_label=False, elem_id="prob-chart")
                    self.entropy_plot = gr.Plot(show_label=False, elem_id="entropy-chart")
                self.top_tokens = gr.Markdown(elem_id="topk-tokens")
                self.metrics = gr.Dataframe(value=[], headers=METRICS_HEADERS, label="perplexity and bits per byte on "
                                            "the evaluation text", interactive=False, elem_id="metrics", wrap=True)
                self.seed_note = gr.Markdown(elem_id="seed-note")
                self.command = gr.Textbox(label="reproduce from the shell (its greedy sample is the noisy "
                                          "continuation)", lines=2, interactive=False, buttons=["copy"],
                                          elem_id="cli-command")
                self.csv_file = gr.File(label="current results as CSV", interactive=False, elem_id="csv-file")
                gr.Markdown("### The curve: every point explored\nOne line per setting (noise, scale, targets, device "
                            "and converter flags, seed, eval tokens); a PCM setting read at several times also shows "
                            "perplexity against time.")
                self.curve_state = gr.State(Curve())
                self.curve_plot = gr.Plot(show_label=False, elem_id="curve-chart")
                self.curve_table = gr.Dataframe(value=[], headers=["setting", "sigma", "perplexity", "clean"],
                                                column_widths=["58%", "14%", "14%", "14%"],
                                                interactive=False, elem_id="curve-table", wrap=True)
                with gr.Row():
                    self.clear = gr.Button("Clear the curve", elem_id="curve-clear")
                    self.export = gr.Button("Export as run folders", elem_id="curve-export")
                self.export_note = gr.Markdown(elem_id="curve-note")

    # -- values -> setting ---------------------------------------------------------------------------
    @property
    def inputs(self) -> list:
        return [self.model, self.noise, self.log_sigma, self.scale, self.targets, self.blocks, self.seed, self.prompt,
                self.max_new, self.top_k, self.eval_tokens, self.preview] + list(self.flag_widgets.values())

    def setting_of(self, values, full: bool = False) -> Setting | None:
        """The setting of the controls' values (None: the sigma box is empty); preview unless ``full``."""
        (model, noise, log_sigma, scale, targets, blocks, seed, prompt, max_new, top_k, eval_tokens,
         preview) = values[:12]
        log_sigma, _ = read_log_sigma(log_sigma, SIGMA_LOG_MIN, sigma_log_max(noise))
        if log_sigma is None:
            return None
        flags = given_flags(noise, dict(zip(self.flag_widgets, values[12:])))
        if preview and not full:
            eval_tokens = min(PREVIEW_EVAL_TOKENS, eval_tokens or PREVIEW_EVAL_TOKENS)
            max_new = min(PREVIEW_NEW_TOKENS, max_new or PREVIEW_NEW_TOKENS)
        return Setting(model=model, noise_type=noise, sigma=sigma_from_slider(log_sigma), scale=scale,
                       targets=tuple(t for t in TARGET_CHOICES if t in (targets or [])), blocks=blocks or "all",
                       seed=seed, prompt=prompt or "", max_new_tokens=max_new, top_k=top_k, eval_tokens=eval_tokens,
                       max_length=self.defaults.max_length, include_bias=self.defaults.include_bias, flags=flags)

    # -- handlers ------------------------------------------------------------------------------------
    def wire(self, run_folder=None):
        gr, ex, status = self.gr, self.explorer, self.status
        protect = guard(gr, status)

        def ok(text):
            return gr.update(value=text, elem_classes=[])

        def warn(text):
            return gr.update(value=f"⚠ {text}", elem_classes=["error"])

        def compute(full, values, curve, progress):
            s = self.setting_of(values, full)
            if s is None:  # an empty sigma box changes nothing (the release check said so)
                yield {status: gr.update()}
                return
            s = ex.checked(s)
            if s == self.shown and self.last is not None:  # a second tab, a reload, a repeated press, a click on
                shown, ppl, entropy = self.last          # the track (it releases twice): the result, shown again
                curve = curve.copy()
                curve.add(s, ppl[1], ppl[0], entropy)
                yield {**shown, status: ok(f"Same setting as the last result (sigma = {s.sigma:g}): shown again, "
                                           "nothing recomputed."),
                       self.curve_state: curve, self.curve_plot: curve.figure(), self.curve_table: curve.table()}
                return
            self.shown = self.last = None
            cancelled = ex.requests.ticket(s.sigma)
            began, kind = time.monotonic(), (s.noise_type, s.eval_tokens, s.max_new_tokens)
            eta = f"; about {self.took[kind]:.0f} s, as the last such point" if kind in self.took else ""
            yield {status: ok(f"Computing sigma = {s.sigma:g} ({'full setting' if full or not values[11] else 'preview'}"
                              f", {s.eval_tokens} eval tokens, {s.max_new_tokens} new tokens{eta})...")}
            cmp = ex.compare(s, cancelled)
            rows = result_rows(cmp)
            labels = ", ".join(f"`{html.escape(t)}`" for t, _, _ in cmp.top)
            first = {self.results_sigma: f"Results for **sigma = {s.sigma:g}** ({html.escape(s.label)}; perplexity "
                                         "computing...)",
                     self.clean_text: cmp.clean.text, self.noisy_text: cmp.noisy.text,
                     self.prob_plot: probability_figure(cmp.top, s.sigma),
                     self.entropy_plot: entropy_figure(cmp.clean.entropy, cmp.noisy.entropy, s.sigma),
                     self.top_tokens: f"Top-k tokens as charted (escaped: `\\n` newline, `␣` space): {labels}",
                     self.metrics: metrics_table(rows),
                     self.command: cli_command(s, text_file=ex.text_file, dataset=ex.dataset),
                     self.seed_note: f"Noise realization: base seed {s.seed}, trial 0; its derived seed "
                                     f"{noise_seed(s.seed)} is the `seed` column of the CSV and of the exported "
                                     "command's results.csv (`derive_seed(seed, 'noise', target, trial)`)."}
            yield {**first, status: ok(f"Generated at sigma = {s.sigma:g} ({cmp.injection['n_params']:,} noised "
                                       "parameters); computing perplexity...")}
            progress(0, desc="perplexity")
            try:
                ppl = ex.perplexity(s, progress=lambda f: progress(f, desc="perplexity"), cancelled=cancelled)
                if cancelled():
                    raise Cancelled
            except Cancelled:  # the heading must not promise a perplexity that will not come
                yield {self.results_sigma: f"Results for **sigma = {s.sigma:g}** ({html.escape(s.label)}; perplexity "
                                           "not computed: superseded or stopped)"}
                raise
            rows = result_rows(cmp, ppl)
            curve = curve.copy()
            curve.add(s, ppl[1], ppl[0], cmp.noisy.mean_entropy)
            done = {**first, self.results_sigma: f"Results for **sigma = {s.sigma:g}** ({html.escape(s.label)}; "
                                                 f"{ppl[1].n_tokens} eval tokens)",
                    self.metrics: metrics_table(rows), self.csv_file: str(write_csv(rows))}
            self.shown, self.last = s, (done, ppl, cmp.noisy.mean_entropy)
            self.took[kind] = time.monotonic() - began  # the next point of this noise and size says how long
            yield {**done, status: ok(f"Done: sigma = {s.sigma:g}, perplexity {ppl[0].perplexity:.4g} clean, "
                                      f"{ppl[1].perplexity:.4g} noisy, on {ppl[1].n_tokens} tokens."),
                   self.curve_state: curve, self.curve_plot: curve.figure(), self.curve_table: curve.table()}

        @protect
        def on_compute(curve, *values, progress=gr.Progress()):
            yield from compute(False, values, curve, progress)

        @protect
        def on_full(curve, *values, progress=gr.Progress()):
            yield from compute(True, values, curve, progress)

        @protect
        def on_compute_if_live(is_live, curve, *values, progress=gr.Progress()):
            if is_live:
                yield from compute(False, values, curve, progress)
            else:
                yield {status: gr.update()}

        def raw(value, evt):
            """The value as released: the slider's event data holds what was typed (the input, the browser's
            clamp of it: an empty box reads as the maximum)."""
            data = getattr(evt, "_data", None)
            if evt is None:
                return value
            return data if data is None or isinstance(data, (int, float, str)) else value

        def want(value):
            """Runs at once (outside the queue): a newer sigma supersedes the running computation."""
            v, _ = read_log_sigma(value)
            if v is not None:
                ex.requests.want(sigma_from_slider(v))

        def on_release_check(value, committed, is_live, noise, evt: gr.EventData):
            v, note = read_log_sigma(raw(value, evt), SIGMA_LOG_MIN, sigma_log_max(noise))
            if v is None:  # the browser shows its clamp of the empty box: put the last sigma back, compute nothing
                return {self.log_sigma: gr.update(value=committed), status: warn(note),
                        self.sigma_text: f"sigma = **{sigma_from_slider(committed):g}**"}
            if is_live:
                want(v)
            out = {self.committed: v, self.log_sigma: gr.update(value=v),
                   self.sigma_text: f"sigma = **{sigma_from_slider(v):g}**"}
            out[status] = warn(note) if note else ok(f"sigma = {sigma_from_slider(v):g}.")
            return out

        def on_time_release(value, evt: gr.EventData):
            v, note = read_log_sigma(raw(value, evt), 0.0, TIME_LOG_MAX)
            if v is None:
                return {status: warn(note.replace("log10 sigma", "log10 time"))}
            out = {self.time: gr.update(value=v), self.flag_widgets["t_seconds"]: f"{10 ** v:.4g}"}
            if note:
                out[status] = warn(note.replace("log10 sigma", "log10 time"))
            return out

        # Gradio hands EventData by the annotation's object (a string under postponed annotations is not seen).
        on_release_check.__annotations__["evt"] = on_time_release.__annotations__["evt"] = gr.EventData

        def on_sigma(value):
            v, _ = read_log_sigma(value)
            return gr.update() if v is None else f"sigma = **{sigma_from_slider(v):g}**"

        def on_noise(noise, scale, previous):
            """Show the noise's own controls; between a device model and a plain noise sigma and scale start over."""
            shown = shown_for(noise)
            allowed = getattr(NOISE_REGISTRY.get(noise), "scales", None)
            was_device = sigma_log_max(previous) > SIGMA_LOG_MAX  # a device model: sigma x the device
            out = {self.flag_widgets[c.dest]: gr.update(visible=c.dest in shown)
                   for c in self.controls_meta if c.group == "device"}
            new_scale, note = scale, ""
            if allowed and (scale not in allowed or not was_device):
                new_scale, log_sigma = allowed[0], 0.0
                note = f"{noise}: scale {new_scale} (its mapping), sigma = 1 (the device as measured)."
            elif not allowed and was_device:
                new_scale, log_sigma = self.defaults.scale, log10_or_min(self.defaults.sigma)
                note = f"{noise}: scale {new_scale}, sigma = {sigma_from_slider(log_sigma):g} (the page's start)."
            out[self.log_sigma] = gr.update(maximum=sigma_log_max(noise))
            if note:
                out.update({self.log_sigma: gr.update(maximum=sigma_log_max(noise), value=log_sigma),
                            self.sigma_text: f"sigma = **{sigma_from_slider(log_sigma):g}**", status: ok(note)})
            out.update({self.time: gr.update(visible="t_seconds" in shown),
                        self.time_text: gr.update(visible="t_seconds" in shown), self.scale: new_scale,
                        self.meaning: sigma_meaning(noise, new_scale), self.noise_state: noise})
            return out

        def on_time(value, typed):
            """The slider moved: the t_seconds box follows, unless the box set the slider (within a step)."""
            v, _ = read_log_sigma(value, 0.0, TIME_LOG_MAX)
            t = _float_or(typed, None)
            if v is None or (t is not None and t > 0 and abs(math.log10(t) - v) <= 0.026):
                return gr.update(), (gr.update() if v is None else f"read **{human_time(t)}** after programming")
            return f"{10 ** v:.4g}", f"read **{human_time(10 ** v)}** after programming"

        def on_t_seconds(typed):
            """A t_seconds typed in its box moves the time slider (clamped to its range) and its readout."""
            t = _float_or(typed, None)
            if t is None or not (math.isfinite(t) and t > 0):
                return gr.update(), gr.update()
            return (min(max(math.log10(t), 0.0), TIME_LOG_MAX), f"read **{human_time(t)}** after programming")

        @protect
        def on_sweep(curve, n_levels, *values):
            s = self.setting_of(values)
            if s is None:
                raise NoisyNNError("the log10 sigma box is empty: set a sigma to sweep up to")
            n = whole_number_in("sweep levels", n_levels, 2, 20)
            sigmas = [x for x in levels(s.sigma, n + 1, "log") if x > 0]
            cancelled = ex.requests.ticket(None)
            yield {status: ok(f"Sweep: {len(sigmas)} levels up to sigma = {s.sigma:g}...")}
            for i, sigma, clean, noisy in sweep_points(ex, s, sigmas, tempfile.mkdtemp(prefix="noisynn-ui-sweep-"),
                                                       cancelled):
                if cancelled():  # finished as Stop was pressed: the page never shows it, so the curve keeps it out
                    break
                curve = curve.copy()  # the state the page holds changes only with what it is shown
                curve.add(dataclasses.replace(s, sigma=sigma), noisy, clean)
                yield {status: ok(f"Sweep: point {i + 1} of {len(sigmas)} (sigma = {sigma:.4g}): perplexity "
                                  f"{noisy.perplexity:.4g}" + (" - done." if i + 1 == len(sigmas) else "...")),
                       self.curve_state: curve, self.curve_plot: curve.figure(), self.curve_table: curve.table()}
            if cancelled():
                yield {status: ok(f"Sweep stopped: {curve.n_points} points on the curve.")}

        def on_stop():
            ex.requests.stop()
            return ok("Stopped: the running computation ends at its next layer; results shown stay as named.")

        def on_clear(curve):
            curve.clear()
            return {self.curve_state: curve, self.curve_plot: curve.figure(), self.curve_table: [],
                    status: ok("The curve is cleared.")}

        @protect
        def on_export(curve):
            path = curve.export(self.runs_root)
            n = len(list(path.iterdir()))
            note = (f"Exported {curve.n_points} points ({n} settings) to `{path}`: one sweep run folder per setting; "
                    f"`noisynn generate_graphs --results_dir {path}` redraws them, the Saved runs tab shows them.")
            out = {status: ok(f"Exported to {path}."), self.export_note: note}
            if run_folder is not None:
                from .saved_runs import list_runs

                out[run_folder] = gr.update(choices=list_runs((self.runs_root,)), value=str(sorted(path.iterdir())[0]))
            return out

        outputs = [status, self.results_sigma, self.clean_text, self.noisy_text, self.prob_plot, self.entropy_plot,
                   self.top_tokens, self.metrics, self.seed_note, self.command, self.csv_file, self.curve_state,
                   self.curve_plot, self.curve_table]
        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        fast = {"queue": False, "show_progress": "hidden"}
        self.log_sigma.change(on_sigma, self.log_sigma, self.sigma_text, **fast)
        # The check runs at once (it supersedes the running computation, clamps or refuses the value);
        # the computation follows it in the model's queue. Every release is queued ("once" would drop the later
        # ones while one runs); a superseded one ends at its first layer, a repeat of what is shown at once.
        live_event = self.log_sigma.release(
            on_release_check, [self.log_sigma, self.committed, self.live, self.noise],
            [self.log_sigma, self.committed, status, self.sigma_text], **fast).then(
            on_compute_if_live, [self.live, self.curve_state] + self.inputs, outputs, trigger_mode="multiple",
            **model_queue)
        t_box = self.flag_widgets.get("t_seconds")
        if t_box is not None:
            self.time.change(on_time, [self.time, t_box], [t_box, self.time_text], **fast)
            t_box.change(on_t_seconds, t_box, [self.time, self.time_text], **fast)
            time_event = self.time.release(on_time_release, self.time, [self.time, t_box, status], **fast).then(
                on_compute_if_live, [self.live, self.curve_state] + self.inputs, outputs, trigger_mode="multiple",
                **model_queue)
        else:
            time_event = None
        for button in (self.generate, self.full):
            button.click(want, self.log_sigma, None, **fast)
        gen_event = self.generate.click(on_compute, [self.curve_state] + self.inputs, outputs, **model_queue)
        full_event = self.full.click(on_full, [self.curve_state] + self.inputs, outputs, **model_queue)
        sweep_event = self.sweep.click(on_sweep, [self.curve_state, self.sweep_levels] + self.inputs,
                                       [status, self.curve_state, self.curve_plot, self.curve_table], **model_queue)
        if "analog_preset" in self.flag_widgets:  # a preset's values in the empty converter boxes
            self.flag_widgets["analog_preset"].change(
                lambda name: [gr.update(placeholder=t) for t in preset_placeholders(name or None).values()],
                self.flag_widgets["analog_preset"], [self.flag_widgets[d] for d in preset_placeholders(None)], **fast)
        self.noise.change(on_noise, [self.noise, self.scale, self.noise_state],
                          [self.time, self.time_text, self.scale, self.meaning, self.log_sigma, self.sigma_text, status,
                           self.noise_state]
                          + [self.flag_widgets[c.dest] for c in self.controls_meta if c.group == "device"], **fast)
        self.scale.change(lambda n, s: sigma_meaning(n, s), [self.noise, self.scale], self.meaning, **fast)
        self.clear.click(on_clear, self.curve_state, [self.curve_state, self.curve_plot, self.curve_table, status],
                         **fast)
        self.export.click(on_export, self.curve_state, [status, self.export_note] + ([run_folder] if run_folder else []))
        self.events = [e for e in (live_event, time_event, gen_event, full_event, sweep_event) if e is not None]
        self.stop_button_wiring = (on_stop, fast)
        return self.events

    def wire_stop(self, extra_events=(), also=()):
        """The Stop button (and the buttons ``also``, e.g. the generation tab's) ends every running computation."""
        on_stop, fast = self.stop_button_wiring
        for button in (self.stop, *also):
            button.click(on_stop, None, self.status, cancels=list(self.events) + list(extra_events), **fast)
