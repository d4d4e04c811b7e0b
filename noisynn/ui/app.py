"""``noisynn ui``: explore noise in the browser, on a local Gradio app (127.0.0.1, nothing fetched).

    noisynn ui                      # embedded SmolLM2-135M, http://127.0.0.1:7860
    noisynn ui --port 8000 --noise_type laplacian --scale relative
    noisynn ui --noise_type pcm --scale relative_channel --t_seconds 1e8   # device flags: the controls' start

This module is the app shell (the Noise during generation and Saved runs tabs, the server, the command
line); the Explore tab is ``ui_explore``. Every number, text and figure comes from ``noisynn.ui.explore*``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import logging
import os
import socket
import sys

from ..analog.setting import AnalogSetting
from ..runs.context import check_model_flags
from ..corpus import load_text
from ..errors import NoisyNNError
from ..evaluation import DEFAULT_PROMPT
from .setting import (SIGMA_LOG_MAX, SIGMA_LOG_MIN, TARGET_CHOICES, Setting, check_setting, read_log_sigma,
                      sigma_from_slider)
from .explore import Explorer
from .figures import drift_figure
from .controls import defaults_from_args, given_flags
from ..models.checks import DEFAULT_MAX_LENGTH, fit_context
from ..models.loading import check_model_name, load_model
from ..options.parser import ArgumentParser
from ..options.flags import add_converter_args, add_model_args, add_noise_args, existing_folder
from ..options.plugins import load_plugins
from ..options.argtypes import nonneg_float, nonneg_int, positive_int
from ..options.script import script_main
from .saved_runs import RUN_ROOTS, list_runs, load_saved_run
from ..spec import parse_targets
from .explore_tab import ExploreTab, guard, lenient_slider

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Nothing leaves the machine: no analytics, no version check, no hub; fonts and JS come from the wheel.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False", "DO_NOT_TRACK": "1"}
# Narrow screens (a laptop half, 800 px) stack the columns instead of squeezing the charts to thumbnails.
CSS = """
#status p { font-weight: 600; }
#status.error p, .error-text { color: #b91c1c; }
#metrics, #curve-table { overflow-x: auto; }
@media (max-width: 1100px) {
  .stack-narrow { flex-direction: column !important; flex-wrap: nowrap !important; }
  .stack-narrow > * { width: 100% !important; min-width: 0 !important; flex: 1 1 auto !important; }
}
"""


def _offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def _import_gradio():
    _offline()
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), HOST, "localhost"]))
    try:
        import gradio as gr
    except ImportError:
        raise NoisyNNError("noisynn ui needs gradio: pip install -r requirements.txt (or pip install 'noisynn[ui]')") \
            from None
    return gr


def build_app(explorer: Explorer, defaults: Setting = Setting(), run_roots=RUN_ROOTS, flag_defaults: dict | None = None):
    """The Gradio Blocks app; every handler turns bad input into a visible message, never a traceback.

    ``flag_defaults``: the device and converter flags given on the command line (their controls' initial text).
    """
    gr = _import_gradio()
    flag_defaults = dict(flag_defaults or {})
    flag_defaults.update({k: v for k, v in defaults.flags if k not in flag_defaults})
    Slider = lenient_slider(gr)

    with gr.Blocks(title="Noisy Neural Network", analytics_enabled=False) as app:
        gr.Markdown("## Noisy Neural Network: noise in the weights, live\n"
                    "Greedy continuations of the clean and the noisy model, the next-token distribution after the "
                    "prompt, per-token entropy, and perplexity on the evaluation text; every point computed joins "
                    "the curve below. Every setting is one noise realization (trial 0 of the seed); the command "
                    "shown reproduces it.")
        status = gr.Markdown("Ready.", elem_id="status")
        with gr.Tab("Explore"):
            tab = ExploreTab(gr, explorer, defaults, flag_defaults, status, str(run_roots[0]))
        with gr.Tab("Noise during generation"):
            gr.Markdown("Sigma grows token by token while the model writes (one noise realization, set to each "
                        "token's sigma): watch the text degrade as it streams. Uses the prompt, noise, device "
                        "flags, targets and seed of the Explore tab.")
            with gr.Row(elem_classes=["stack-narrow"]):
                drift_start = Slider(SIGMA_LOG_MIN, SIGMA_LOG_MAX, value=-3.0, step=0.05,
                                     label="log10 sigma at the first token", elem_id="drift-start")
                drift_end = Slider(SIGMA_LOG_MIN, SIGMA_LOG_MAX, value=-1.0, step=0.05,
                                   label="log10 sigma at the last token", elem_id="drift-end")
                drift_tokens = gr.Number(48, precision=0, label="tokens", elem_id="drift-tokens")
            with gr.Row():
                play = gr.Button("Play", variant="primary", elem_id="drift-play")
                drift_stop = gr.Button("Stop", variant="stop", elem_id="drift-stop")
            drift_now = gr.Markdown(elem_id="drift-now")
            drift_text = gr.Textbox(label="continuation under growing noise", lines=6, interactive=False,
                                    elem_id="drift-text")
            drift_plot = gr.Plot(label="entropy and surprisal against sigma", show_label=False, elem_id="drift-chart")
        with gr.Tab("Saved runs"):
            gr.Markdown("A run folder's figures and table, read from its files (run.json, results.csv, summary.csv, "
                        "PNGs). Folders under " + ", ".join(f"`{r}/`" for r in run_roots) + " are listed. "
                        "Numbers show 4 significant digits (the files keep full precision); the `seed` column is "
                        "each realization's derived seed, the base seed is run.json's `config.seed`.")
            with gr.Row():
                run_folder = gr.Dropdown(list_runs(run_roots), value=None, allow_custom_value=True,
                                         label="run folder", elem_id="run-folder", scale=4)
                refresh = gr.Button("Refresh list", scale=1)
                load_run = gr.Button("Show", variant="primary", scale=1, elem_id="run-show")
            run_note = gr.Markdown(elem_id="run-note")
            gallery = gr.HTML(elem_id="run-figures")
            run_table = gr.Dataframe(label="table", interactive=False, elem_id="run-table")
            run_config = gr.JSON(label="run.json config", elem_id="run-config")

        def ok(text):
            return gr.update(value=text, elem_classes=[])

        @guard(gr, status)
        def on_drift(start, end, n_tokens, *values):
            lo_log, _ = read_log_sigma(start)
            hi_log, _ = read_log_sigma(end)
            if lo_log is None or hi_log is None:
                raise NoisyNNError("a log10 sigma box is empty: set the first and last token's sigma")
            s = tab.setting_of(values, full=True)
            if s is None:
                raise NoisyNNError("the log10 sigma box of the Explore tab is empty")
            s = explorer.checked(dataclasses.replace(s, max_new_tokens=n_tokens))
            lo, hi = sigma_from_slider(lo_log), sigma_from_slider(hi_log)
            steps = []
            yield {status: ok(f"Playing sigma from {lo:g} to {hi:g} over {s.max_new_tokens} tokens..."),
                   drift_text: "", drift_plot: None}
            for step in explorer.drift(s, lo, hi, cancelled=explorer.requests.ticket(None)):
                steps.append(step)
                yield {drift_text: step.text, drift_now: f"token {step.t + 1}: sigma = **{step.sigma:.3g}**, "
                                                         f"entropy {step.entropy:.2f} bits"}
            last = steps[-1].sigma if steps else hi
            done = len(steps) == s.max_new_tokens or (steps and steps[-1].t + 1 < s.max_new_tokens)
            yield {status: ok(f"Generation {'done' if done else 'stopped'}: {len(steps)} tokens, sigma {lo:g} -> "
                              f"{last:g}."), drift_plot: drift_figure(steps) if steps else None}

        @guard(gr, status)
        def on_load_run(folder):
            run = load_saved_run(folder)
            import pandas as pd

            # Inline data URIs: the figures may live outside the folders Gradio serves files from.
            images = "".join(f'<figure><img alt="{html.escape(p.name)}" style="max-width:100%" src="data:image/png;'
                             f'base64,{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.name)}'
                             "</figcaption></figure>" for p in run.figures)
            cfg = run.meta.get("config", {})
            note = f"`{run.path}`: {run.table_name} ({len(run.rows)} rows), {len(run.figures)} figure(s). {run.note}"
            return {status: ok(f"Showing {run.path}."), run_note: note, gallery: images,
                    run_table: pd.DataFrame(run.rows, columns=run.columns), run_config: cfg}

        events = tab.wire(run_folder)
        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        drift_event = play.click(on_drift, [drift_start, drift_end, drift_tokens] + tab.inputs,
                                 [status, drift_text, drift_now, drift_plot], **model_queue)
        tab.wire_stop([drift_event], also=(drift_stop,))
        refresh.click(lambda: gr.update(choices=list_runs(run_roots)), None, run_folder)
        load_run.click(on_load_run, run_folder, [status, run_note, gallery, run_table, run_config])
        run_folder.select(on_load_run, run_folder, [status, run_note, gallery, run_table, run_config])
        app.noisynn_events = events
    return app


def launch(app, port: int, block: bool = True):
    """Serve on 127.0.0.1 only, client-side rendering, no share link, no analytics."""
    gr = _import_gradio()
    return app.queue().launch(server_name=HOST, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                              prevent_thread_lock=not block, show_error=False, quiet=False,
                              theme=gr.themes.Default(), css=CSS)


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p, schedule=False)  # the explorer has no per-layer schedule control
    add_converter_args(p)
    g = p.add_argument_group("ui")
    g.add_argument("--port", type=port_number, default=7860,
                   help="port on 127.0.0.1; 0 picks a free one (default: %(default)s)")
    g.add_argument("--blocks", default="all", help="initial blocks, e.g. 0-9,20 (default: %(default)s)")
    g.add_argument("--sigma", type=nonneg_float, default=0.02, help="initial sigma (default: %(default)s)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="initial seed (default: %(default)s)")
    g.add_argument("--prompt", default=DEFAULT_PROMPT, help="initial prompt (default: %(default)r)")
    g.add_argument("--max_new_tokens", type=positive_int, default=30, help="initial tokens per continuation "
                   "(default: %(default)s)")
    g.add_argument("--runs", action="append", type=existing_folder, default=None, metavar="DIR",
                   help=f"folder whose run folders the Saved runs tab lists; repeatable "
                        f"(default: {', '.join(RUN_ROOTS)})")


def port_number(text: str) -> int:
    value = nonneg_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port (0-65535)")
    return value


def defaults_from(args) -> Setting:
    """The initial setting from the command line; checked like every later one."""
    kinds, projs = parse_targets(args.targets)
    if projs or not kinds <= set(TARGET_CHOICES):
        raise NoisyNNError(f"the ui offers the targets {', '.join(TARGET_CHOICES)} (and blocks); "
                           f"got --targets {args.targets}")
    # Each flag by the CLI's rules; not their combination: they start the controls, and the page keeps the flags of
    # the noise shown only (--t_seconds starts the pcm control while the page starts on gaussian).
    AnalogSetting.from_args(args, combinations=False)
    s = Setting(model=args.model, noise_type=args.noise_type, sigma=float(f"{args.sigma:.4g}"), scale=args.scale,
                targets=tuple(t for t in TARGET_CHOICES if t in kinds), blocks=args.blocks, seed=args.seed,
                prompt=args.prompt,
                max_new_tokens=args.max_new_tokens, eval_tokens=args.eval_tokens,
                max_length=args.max_length or DEFAULT_MAX_LENGTH, include_bias=args.include_bias,
                flags=given_flags(args.noise_type, defaults_from_args(args)))
    return check_setting(s)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="noisynn ui", description=__doc__.strip().splitlines()[0])
    add_args(p)
    return p


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    load_plugins(args.plugin)
    defaults = defaults_from(args)
    check_model_flags(args)  # everything that can be checked without the model, before the slow imports
    _offline()  # before the model name is checked: a hub id is looked up in the local cache only
    check_model_name(args.model)
    if args.text_file:
        load_text(args.text_file, args.dataset)
    port = free_port(args.port)  # before the slow load: a port in use (a second instance) fails now
    _import_gradio()

    def loader(name, **kwargs):  # --tokenizer belongs to --model, not to models chosen later in the page
        return load_model(name, tokenizer=args.tokenizer if name == args.model else None, **kwargs)

    explorer = Explorer(device=args.device, dtype=args.dtype, text_file=args.text_file, dataset=args.dataset,
                        device_map=args.device_map, max_memory=args.max_memory, loader=loader)
    print(f"loading {args.model} ...", flush=True)  # stdout: stderr holds only an error's one line
    lm = explorer.model(args.model)  # loaded once, before the page is served
    window = fit_context(lm, args.max_length, [defaults.prompt], defaults.max_new_tokens)
    defaults = explorer.checked(dataclasses.replace(defaults, max_length=window))  # --blocks against the model
    explorer.eval_ids(defaults)
    app = build_app(explorer, defaults, tuple(args.runs or RUN_ROOTS), defaults_from_args(args))
    print(f"serving on http://{HOST}:{port}", flush=True)
    try:
        launch(app, port)
    except OSError as err:  # the port was taken between the check and the launch
        raise NoisyNNError(f"cannot serve on {HOST}:{port}: {err}") from None
    return 0


def free_port(port: int) -> int:
    """``port`` if nothing listens on it on 127.0.0.1, else NoisyNNError; 0 -> a free port the OS picks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server will: a port left in TIME_WAIT is free, one with a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as err:
            raise NoisyNNError(f"port {port} on {HOST} is in use ({err.strerror}; another noisynn ui?); "
                               "give another --port, or --port 0 for a free one") from None
        return sock.getsockname()[1]


def main(argv=None) -> int:
    return script_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
