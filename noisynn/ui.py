"""``noisynn ui``: explore noise in the browser, on a local Gradio app (127.0.0.1, nothing fetched).

    noisynn ui                      # embedded SmolLM2-135M, http://127.0.0.1:7860
    noisynn ui --port 8000 --noise_type laplacian --scale relative

This module is layout only: every number, text and figure comes from ``noisynn.explore``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import html
import inspect
import logging
import math
import os
import socket
import sys

from .context import check_model_flags
from .corpus import load_text
from .errors import NoisyNNError
from .explore import (DEFAULT_PROMPT, MAX_NEW_TOKENS, METRICS_HEADERS, TARGET_CHOICES, Explorer, Setting,
                      check_setting, cli_command, drift_figure, entropy_figure, metrics_table, noise_choices,
                      probability_figure, result_rows, sigma_from_slider, write_csv)
from .models import DEFAULT_MAX_LENGTH, check_model_name, fit_context, load_model
from .options import (ArgumentParser, add_model_args, add_noise_args, existing_folder, load_plugins, nonneg_float,
                      nonneg_int, positive_int, script_main)
from .saved_runs import RUN_ROOTS, list_runs, load_saved_run
from .spec import parse_targets

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SIGMA_LOG_MIN, SIGMA_LOG_MAX = -4.0, 0.0
# Nothing leaves the machine: no analytics, no version check, no hub; fonts and JS come from the wheel.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False", "DO_NOT_TRACK": "1"}
CSS = """
#status p { font-weight: 600; }
#status.error p, .error-text { color: #b91c1c; }
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


def _log10(x: float) -> float:
    return min(max(math.log10(x), SIGMA_LOG_MIN), SIGMA_LOG_MAX) if x > 0 else SIGMA_LOG_MIN


def build_app(explorer: Explorer, defaults: Setting = Setting(), run_roots=RUN_ROOTS):
    """The Gradio Blocks app; every handler turns bad input into a visible message, never a traceback."""
    gr = _import_gradio()

    def guard(status):
        """Decorator: NoisyNNError -> its message; anything else -> a short message (traceback only in the log)."""
        def wrap(fn):
            def message(err):
                if isinstance(err, NoisyNNError):
                    text = str(err)
                else:
                    log.exception("ui handler %s failed", fn.__name__)
                    text = f"internal error ({type(err).__name__}: {str(err)[:300]}); the server keeps running"
                gr.Warning(html.escape(text), title="Cannot do that")  # a toast, seen wherever the page is scrolled
                return f"⚠ {text}"

            if inspect.isgeneratorfunction(fn):
                @functools.wraps(fn)
                def gen_wrapper(*args, **kwargs):
                    try:
                        yield from fn(*args, **kwargs)
                    except Exception as err:  # noqa: BLE001 - shown to the user, logged with traceback
                        yield {status: gr.update(value=message(err), elem_classes=["error"])}
                return gen_wrapper

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as err:  # noqa: BLE001
                    return {status: gr.update(value=message(err), elem_classes=["error"])}
            return wrapper
        return wrap

    def ok(text):
        return gr.update(value=text, elem_classes=[])

    def setting_of(model, noise, log_sigma, scale, targets, blocks, seed, df, prompt, max_new, top_k, eval_tokens):
        return Setting(model=model, noise_type=noise, sigma=sigma_from_slider(log_sigma), scale=scale,
                       targets=tuple(t for t in TARGET_CHOICES if t in (targets or [])), blocks=blocks or "all",
                       seed=seed, prompt=prompt or "", max_new_tokens=max_new, top_k=top_k, eval_tokens=eval_tokens,
                       max_length=defaults.max_length, df=df, include_bias=defaults.include_bias)

    with gr.Blocks(title="Noisy Neural Network", analytics_enabled=False) as app:
        gr.Markdown("## Noisy Neural Network: noise in the weights, live\n"
                    "Greedy continuations of the clean and the noisy model, the next-token distribution after the "
                    "prompt, per-token entropy, and perplexity on the evaluation text. Every setting is one noise "
                    "realization (trial 0 of the seed); the command below reproduces it.")
        status = gr.Markdown("Ready.", elem_id="status")
        state = gr.State(None)
        with gr.Tab("Explore"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    model = gr.Dropdown([defaults.model], value=defaults.model, allow_custom_value=True, label="model",
                                        info="embedded alias, local folder, .gguf file or hub id", elem_id="model")
                    noise = gr.Dropdown(noise_choices(), value=defaults.noise_type, label="noise type",
                                        elem_id="noise-type")
                    log_sigma = gr.Slider(SIGMA_LOG_MIN, SIGMA_LOG_MAX, value=_log10(defaults.sigma), step=0.05,
                                          label="log10 sigma", elem_id="sigma-slider")
                    sigma_text = gr.Markdown(f"sigma = **{sigma_from_slider(_log10(defaults.sigma)):g}**",
                                             elem_id="sigma-value")
                    scale = gr.Dropdown(["absolute", "relative", "relative_max", "relative_channel"],
                                        value=defaults.scale, label="scale",
                                        info="absolute: weight units; relative: x std(W); relative_max: x max|W|; "
                                             "relative_channel: x max|W| per output channel")
                    targets = gr.CheckboxGroup(list(TARGET_CHOICES), value=list(defaults.targets), label="targets",
                                               elem_id="targets")
                    blocks = gr.Textbox(defaults.blocks, label="blocks", info="attention/mlp of these blocks: all, "
                                        "or e.g. 0-9,20", elem_id="blocks")
                    with gr.Row():
                        seed = gr.Number(defaults.seed, precision=0, label="seed", elem_id="seed")
                        df = gr.Number(defaults.df or 3.0, label="df (student_t only)", elem_id="df")
                    prompt = gr.Textbox(defaults.prompt, lines=2, label="prompt", elem_id="prompt")
                    with gr.Row():
                        max_new = gr.Number(defaults.max_new_tokens, precision=0, label="max new tokens",
                                            info=f"1-{MAX_NEW_TOKENS}", elem_id="max-new-tokens")
                        top_k = gr.Number(defaults.top_k, precision=0, label="top-k in chart", elem_id="top-k")
                        eval_tokens = gr.Number(defaults.eval_tokens, precision=0, label="eval tokens",
                                                elem_id="eval-tokens")
                    live = gr.Checkbox(True, label="update when the slider is released", elem_id="live")
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    with gr.Row():
                        clean_text = gr.Textbox(label="clean continuation", lines=5, interactive=False,
                                                elem_id="clean-text")
                        noisy_text = gr.Textbox(label="noisy continuation", lines=5, interactive=False,
                                                elem_id="noisy-text")
                    with gr.Row():
                        prob_plot = gr.Plot(label="next-token probability", show_label=False, elem_id="prob-chart")
                        entropy_plot = gr.Plot(label="entropy along the generation", show_label=False,
                                               elem_id="entropy-chart")
                    metrics = gr.Dataframe(value=[], headers=METRICS_HEADERS, label="perplexity and bits per byte on "
                                           "the evaluation text", interactive=False, elem_id="metrics")
                    command = gr.Textbox(label="reproduce from the shell (its greedy sample is the noisy continuation)",
                                         lines=2, interactive=False, buttons=["copy"], elem_id="cli-command")
                    csv_file = gr.File(label="current results as CSV", interactive=False, elem_id="csv-file")
        with gr.Tab("Drift"):
            gr.Markdown("Sigma grows token by token while the model writes (one noise realization, scaled): watch "
                        "the text degrade. Uses the prompt, noise, targets and seed of the Explore tab.")
            with gr.Row():
                drift_start = gr.Slider(SIGMA_LOG_MIN, SIGMA_LOG_MAX, value=-3.0, step=0.05,
                                        label="log10 sigma at the first token", elem_id="drift-start")
                drift_end = gr.Slider(SIGMA_LOG_MIN, SIGMA_LOG_MAX, value=-1.0, step=0.05,
                                      label="log10 sigma at the last token", elem_id="drift-end")
                drift_tokens = gr.Number(48, precision=0, label="tokens", elem_id="drift-tokens")
            play = gr.Button("Play", variant="primary", elem_id="drift-play")
            drift_now = gr.Markdown(elem_id="drift-now")
            drift_text = gr.Textbox(label="continuation under growing noise", lines=6, interactive=False,
                                    elem_id="drift-text")
            drift_plot = gr.Plot(label="entropy and surprisal against sigma", show_label=False, elem_id="drift-chart")
        with gr.Tab("Saved runs"):
            gr.Markdown("A run folder's figures and table, read from its files (run.json, results.csv, summary.csv, "
                        "PNGs). Folders under " + ", ".join(f"`{r}/`" for r in run_roots) + " are listed.")
            with gr.Row():
                run_folder = gr.Dropdown(list_runs(run_roots), value=None, allow_custom_value=True,
                                         label="run folder", elem_id="run-folder", scale=4)
                refresh = gr.Button("Refresh list", scale=1)
                load_run = gr.Button("Show", variant="primary", scale=1, elem_id="run-show")
            run_note = gr.Markdown(elem_id="run-note")
            gallery = gr.HTML(elem_id="run-figures")
            run_table = gr.Dataframe(label="table", interactive=False, elem_id="run-table")
            run_config = gr.JSON(label="run.json config", elem_id="run-config")

        controls = [model, noise, log_sigma, scale, targets, blocks, seed, df, prompt, max_new, top_k, eval_tokens]

        # -- handlers ------------------------------------------------------------------------------
        @guard(status)
        def on_generate(*values):
            s = explorer.checked(setting_of(*values))
            cmp = explorer.compare(s)
            rows = result_rows(cmp)
            shell = cli_command(s, text_file=explorer.text_file, dataset=explorer.dataset)
            return {status: ok(f"Generated at sigma = {s.sigma:g} ({cmp.injection['n_params']:,} noised "
                               f"parameters, {s.noise_type}, {s.scale}); computing perplexity..."),
                    clean_text: cmp.clean.text, noisy_text: cmp.noisy.text,
                    prob_plot: probability_figure(cmp.top, s.sigma),
                    entropy_plot: entropy_figure(cmp.clean.entropy, cmp.noisy.entropy, s.sigma),
                    metrics: metrics_table(rows), command: shell, csv_file: str(write_csv(rows)), state: cmp}

        @guard(status)
        def on_perplexity(cmp, progress=gr.Progress()):
            if cmp is None:  # the generation before failed or did not run
                return {status: gr.update()}
            progress(0, desc="perplexity")
            ppl = explorer.perplexity(cmp.setting, progress=lambda f: progress(f, desc="perplexity"))
            rows = result_rows(cmp, ppl)
            s = cmp.setting
            return {status: ok(f"Done: sigma = {s.sigma:g}, perplexity {ppl[0].perplexity:.4g} clean, "
                               f"{ppl[1].perplexity:.4g} noisy, on {ppl[1].n_tokens} tokens."),
                    metrics: metrics_table(rows), csv_file: str(write_csv(rows)), state: None}

        def on_generate_if_live(is_live, *values):
            return on_generate(*values) if is_live else {status: gr.update()}

        @guard(status)
        def on_drift(start, end, n_tokens, *values):
            s = setting_of(*values)
            s = explorer.checked(dataclasses.replace(s, max_new_tokens=n_tokens))
            lo, hi = sigma_from_slider(start), sigma_from_slider(end)
            steps = []
            yield {status: ok(f"Playing sigma from {lo:g} to {hi:g} over {s.max_new_tokens} tokens..."),
                   drift_text: "", drift_plot: None}
            for step in explorer.drift(s, lo, hi):
                steps.append(step)
                yield {drift_text: step.text, drift_now: f"token {step.t + 1}: sigma = **{step.sigma:.3g}**, "
                                                         f"entropy {step.entropy:.2f} bits"}
            last = steps[-1].sigma if steps else hi
            yield {status: ok(f"Drift done: {len(steps)} tokens, sigma {lo:g} -> {last:g}."),
                   drift_plot: drift_figure(steps) if steps else None}

        @guard(status)
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

        def on_sigma(value):
            return f"sigma = **{sigma_from_slider(value):g}**"

        # -- wiring: every model call in one queue, one at a time (noise is applied in place) --------
        outputs = [status, clean_text, noisy_text, prob_plot, entropy_plot, metrics, command, csv_file, state]
        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        log_sigma.change(on_sigma, log_sigma, sigma_text, queue=False, show_progress="hidden")
        generate.click(on_generate, controls, outputs, **model_queue).then(
            on_perplexity, state, [status, metrics, csv_file, state], **model_queue)
        log_sigma.release(on_generate_if_live, [live] + controls, outputs, **model_queue).then(
            on_perplexity, state, [status, metrics, csv_file, state], **model_queue)
        play.click(on_drift, [drift_start, drift_end, drift_tokens] + controls,
                   [status, drift_text, drift_now, drift_plot], **model_queue)
        refresh.click(lambda: gr.update(choices=list_runs(run_roots)), None, run_folder)
        load_run.click(on_load_run, run_folder, [status, run_note, gallery, run_table, run_config])
        run_folder.select(on_load_run, run_folder, [status, run_note, gallery, run_table, run_config])
    return app


def launch(app, port: int, block: bool = True):
    """Serve on 127.0.0.1 only, client-side rendering, no share link, no analytics."""
    gr = _import_gradio()
    return app.queue().launch(server_name=HOST, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                              prevent_thread_lock=not block, show_error=False, quiet=False,
                              theme=gr.themes.Default(), css=CSS)


def add_args(p: ArgumentParser) -> None:
    add_model_args(p)
    add_noise_args(p)
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
    s = Setting(model=args.model, noise_type=args.noise_type, sigma=float(f"{args.sigma:.4g}"), scale=args.scale,
                targets=tuple(t for t in TARGET_CHOICES if t in kinds), blocks=args.blocks, seed=args.seed,
                prompt=args.prompt,
                max_new_tokens=args.max_new_tokens, eval_tokens=args.eval_tokens,
                max_length=args.max_length or DEFAULT_MAX_LENGTH,
                df=args.df, include_bias=args.include_bias)
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
    app = build_app(explorer, defaults, tuple(args.runs or RUN_ROOTS))
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
