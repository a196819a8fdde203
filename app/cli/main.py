"""The `omnidesk` command line.

    omnidesk [--models BUNDLE]                           the desktop window
    omnidesk --selftest [--models BUNDLE]                check the installation headless, one text turn
    omnidesk ask --models BUNDLE [options] "question"    one question, the reply streamed as text and speech
                 [--image P] [--audio P] [--video P] [--screen] [--camera [N]]   ... about these
    omnidesk chat --models BUNDLE [options]              a spoken conversation in the terminal
    omnidesk ask|chat --server URL [--api-key K] ...     ... with the model on a server (omnidesk serve)
    omnidesk serve --models BUNDLE [--host H] [--port P] [--api-key K]   the model, for other computers
    omnidesk models convert --from-hf DIR --out BUNDLE   an original checkpoint becomes a bundle
    omnidesk doctor [--server URL]                       where the model runs, hardware, which model fits
    omnidesk bench NAME [options]                        a benchmark of model/bench/ or app/bench/NAME.py

Expected problems (a missing or damaged model file, a bad option) end with one
line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from app.cli.exit_status import EXIT_ERROR, EXIT_INTERRUPTED
from app.system.logs import setup_terminal_logging
from model.detail import DETAILS
from model.errors import OmnideskError
from model.thinker_types import DEFAULT_CONTEXT


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    setup_terminal_logging(args.verbose)
    try:
        return int(args.run(args))
    except OmnideskError as exc:
        print(f"omnidesk: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnidesk", description="A local assistant that sees, hears and speaks."
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log details, including llama.cpp's (else in the log file)",
    )
    parser.add_argument(
        "--models", type=Path, help="model bundle folder for the window (default: the last one)"
    )
    parser.add_argument(
        "--selftest",
        action="store_const",
        const=_selftest,
        dest="run",
        help="check this installation headless (Qt, the model bundle, one text turn) and exit",
    )
    parser.set_defaults(run=_window)
    commands = parser.add_subparsers(title="commands (none: open the window)", metavar="COMMAND")

    ask = commands.add_parser("ask", help="ask one question; the reply streams as text and speech")
    ask.add_argument("question", nargs="?", default="", help="what to ask (may be left out with media)")
    add_turn_options(ask)
    media = ask.add_argument_group("what the question shows or says")
    media.add_argument("--image", action="append", metavar="PATH", help="a picture (may be repeated)")
    media.add_argument("--audio", action="append", metavar="PATH", help="a recording (may be repeated)")
    media.add_argument("--video", action="append", metavar="PATH", help="a video, 2 frames a second")
    media.add_argument(
        "--use-audio-in-video", action="store_true", help="hear the video's sound too, interleaved with it"
    )
    media.add_argument("--screen", action="store_true", help="a shot of the primary screen")
    media.add_argument(
        "--camera", nargs="?", type=int, const=0, metavar="INDEX", help="one webcam frame (default camera 0)"
    )
    ask.add_argument("--out", type=wav_path, help="write the speech to this WAV file as it comes")
    ask.add_argument(
        "--json", action="store_true", help="end with one line of JSON: ids, text, codes, timings"
    )
    ask.set_defaults(run=_ask)

    chat = commands.add_parser("chat", help="a spoken conversation in the terminal")
    add_turn_options(chat)
    chat.set_defaults(run=_chat)

    serve = commands.add_parser(
        "serve", help="answer other computers: OpenAI-compatible chat completions with streamed speech"
    )
    add_engine_options(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this computer only)"
    )
    serve.add_argument("--port", type=int, default=8091, help="port to listen on (default: 8091)")
    serve.add_argument(
        "--api-key",
        default=os.environ.get("OMNIDESK_API_KEY"),
        help="the key clients must send (Authorization: Bearer KEY); needed for any address but "
        "127.0.0.1 (default: $OMNIDESK_API_KEY)",
    )
    serve.add_argument(
        "--max-waiting", type=int, default=2, help="questions that wait while one is answered; more get 429"
    )
    serve.add_argument("--max-request-mb", type=int, default=64, help="the largest request body taken")
    serve.add_argument("--max-media", type=int, default=8, help="images, recordings, videos in one question")
    serve.add_argument(
        "--max-media-seconds", type=float, default=300.0, help="recordings and videos in one question, in all"
    )
    serve.add_argument(
        "--max-codes", type=int, default=4096, help="a cap on each reply's speech codes (50 per second)"
    )
    serve.add_argument(
        "--log-content", action="store_true", help="log the questions and replies (else only their sizes)"
    )
    serve.set_defaults(run=_serve, full_utterance=False)

    models = commands.add_parser("models", help="model files")
    model_commands = models.add_subparsers(title="model commands", required=True, metavar="ACTION")
    convert = model_commands.add_parser(
        "convert", help="build a bundle from an original Qwen2.5-Omni checkpoint"
    )
    convert.add_argument("--from-hf", type=Path, required=True, dest="source", help="checkpoint folder")
    convert.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    convert.add_argument(
        "--dtype", choices=("f32", "f16"), default="f16", help="float type of the Thinker GGUF"
    )
    convert.add_argument("--quant", help="llama.cpp quantization of the Thinker, e.g. Q4_K_M or Q8_0")
    convert.set_defaults(run=_convert)
    download = model_commands.add_parser("download", help="download a bundle (resumes an interrupted one)")
    download.add_argument(
        "size", nargs="?", choices=("3b", "7b"), help="model size (default: what doctor recommends)"
    )
    download.add_argument("--quant", help="Thinker quantization (default: Q4_K_M)")
    download.add_argument("--name", help="the bundle's name (default: qwen2.5-omni-SIZE-QUANT)")
    download.set_defaults(run=_models_download)
    listing = model_commands.add_parser("list", help="the bundles in the models folder")
    listing.set_defaults(run=_models_list)
    verify = model_commands.add_parser("verify", help="hash every file of a bundle again")
    verify.add_argument("bundle", help="a bundle's name or folder")
    verify.set_defaults(run=_models_verify)
    where = model_commands.add_parser("path", help="print the models folder, or a bundle's folder")
    where.add_argument("bundle", nargs="?", help="a bundle's name")
    where.set_defaults(run=_models_path)
    importing = model_commands.add_parser("import", help="make a bundle from files you already have")
    importing.add_argument(
        "files", nargs="+", type=Path, help="an original checkpoint folder, and a Thinker .gguf"
    )
    importing.add_argument("--name", help="the bundle's name (default: the checkpoint folder's)")
    importing.set_defaults(run=_models_import)
    remove = model_commands.add_parser("remove", help="delete a bundle")
    remove.add_argument("bundle", help="a bundle's name or folder")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.set_defaults(run=_models_remove)

    doctor = commands.add_parser(
        "doctor", help="show the hardware, which model size fits it and how it would run"
    )
    doctor.add_argument("--models", help="a bundle (name or folder): how it would run here")
    doctor.add_argument(
        "--server", metavar="URL", help="a server to ask (default: the one the window uses, if any)"
    )
    doctor.add_argument(
        "--api-key",
        default=os.environ.get("OMNIDESK_API_KEY"),
        help="the server's key (default: $OMNIDESK_API_KEY, else the window's)",
    )
    doctor.set_defaults(run=_doctor)

    bench = commands.add_parser("bench", help="benchmarks against the reference implementation")
    bench.add_argument("name", choices=sorted(_benchmarks()))
    bench.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(run=_bench)
    return parser


def exit_on_interrupt() -> None:
    """From now on, Ctrl-C (outside a turn, which handles its own) ends the program at once with
    EXIT_INTERRUPTED. Loading runs in llama.cpp and torch: a KeyboardInterrupt landing in one of
    their callbacks (llama.cpp's log lines) is printed by ctypes as ignored, and loading goes on.
    Only for commands with nothing unsaved at stake there (a WAV file is valid after every chunk)."""

    def leave(signum: int, frame: object) -> None:
        os.write(sys.stderr.fileno(), b"\n")
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, leave)


def _window(args: argparse.Namespace) -> int:
    from app.window.launch import run

    return run(args.models)


def _selftest(args: argparse.Namespace) -> int:
    exit_on_interrupt()  # before the imports: torch and llama.cpp load for seconds
    from app.cli.selftest import run

    return run(args.models)


def add_turn_options(parser: argparse.ArgumentParser) -> None:
    add_engine_options(parser, models_required=False)
    parser.add_argument(
        "--server",
        metavar="URL",
        help="ask a model served elsewhere instead of loading one here: omnidesk serve, vllm-omni or "
        "another OpenAI-compatible Omni server (e.g. http://127.0.0.1:8091/v1)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OMNIDESK_API_KEY"),
        help="the server's key (default: $OMNIDESK_API_KEY)",
    )
    parser.add_argument("--server-model", help="the model's name on the server (default: the first it lists)")
    parser.add_argument("--system", help="your instructions (a persona); see docs/using.md on speech")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument(
        "--max-codes", type=int, default=4096, help="a cap on the speech codes (50 per second)"
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="the reference's greedy decoding (transformers' generate with thinker_do_sample=False and "
        "talker_do_sample=False): the most likely token, with no repetition penalty, and the most likely "
        "speech code after the Talker's repetition penalty of 1.05",
    )
    parser.add_argument("--seed", type=int, help="seed for sampling and for the speech noise")
    parser.add_argument("--text-only", action="store_true", help="reply in text only, without speech")
    parser.add_argument("--voice", default="Chelsie", help="the voice (Chelsie, Ethan, or any in the bundle)")
    parser.add_argument("--play", action="store_true", help="play the speech on the speakers as it comes")
    parser.add_argument(
        "--full-utterance", action="store_true", help="the reference's path: speak after all codes"
    )


def add_engine_options(parser: argparse.ArgumentParser, models_required: bool = True) -> None:
    """Which model runs, where and how: what `ask`, `chat` and `serve` share."""
    parser.add_argument(
        "--models", required=models_required, help="model bundle: its name (omnidesk models list) or folder"
    )
    parser.add_argument(
        "--gpu-layers", type=int, default=-1, help="Thinker layers on the GPU (-1: all that fit)"
    )
    parser.add_argument(
        "--speech-device",
        choices=("auto", "gpu", "cpu"),
        default="auto",
        help="where the Talker and Token2Wav run (auto: the GPU when torch can use one and it fits)",
    )
    parser.add_argument(
        "--speech-quality",
        choices=("auto", "exact", "fast"),
        default="auto",
        help="exact: the reference's path; fast: quantized Talker, fewer ODE steps, a smaller first chunk "
        "(auto: exact on a GPU, fast on the CPU)",
    )
    parser.add_argument(
        "--quick-start",
        action="store_true",
        help="fast speech starts after 12 codes instead of 24 (seconds sooner on a CPU); its first 240 ms "
        "are made without the sound that follows them",
    )
    parser.add_argument(
        "--detail",
        choices=DETAILS,
        default="auto",
        help="how many embeddings a picture gets: sharp 1280, quick 256, auto as many as this computer "
        "encodes in about 3 s (exact speech quality: sharp)",
    )
    parser.add_argument(
        "--context",
        type=int,
        help=f"context window in tokens (default: {DEFAULT_CONTEXT}, or the model's own if it holds fewer)",
    )
    parser.add_argument("--threads", type=int, help="Thinker CPU threads (default: half the logical CPUs)")


def wav_path(value: str) -> Path:
    path = Path(value)
    if path.suffix.lower() != ".wav":
        raise argparse.ArgumentTypeError("--out must name a .wav file")
    return path


def _ask(args: argparse.Namespace) -> int:
    exit_on_interrupt()  # before the imports: torch and llama.cpp load for seconds
    from app.cli.talk import run_ask

    return run_ask(args)


def _chat(args: argparse.Namespace) -> int:
    exit_on_interrupt()  # before the imports: torch and llama.cpp load for seconds
    from app.cli.talk import run_chat

    return run_chat(args)


def _serve(args: argparse.Namespace) -> int:
    exit_on_interrupt()  # while the model loads; uvicorn then stops gracefully on Ctrl-C
    from app.cli.serve import run_serve

    return run_serve(args)


def _convert(args: argparse.Namespace) -> int:
    from model.files.convert import convert_checkpoint
    from model.files.thinker_gguf import QUANT_TYPES

    if args.quant is not None and args.quant not in QUANT_TYPES:
        raise OmnideskError(f"unknown quantization {args.quant}: choose one of {', '.join(QUANT_TYPES)}")
    bundle = convert_checkpoint(
        args.source, args.out, dtype=args.dtype, quant=args.quant, report=lambda m: print(m, file=sys.stderr)
    )
    print(bundle.root)
    return 0


def _models_download(args: argparse.Namespace) -> int:
    from app.cli.progress_line import ProgressLine
    from model.files.download import download_bundle
    from model.files.store import models_dir
    from model.hardware import probe
    from model.sizing import PREFERRED_QUANT, recommend

    size = args.size
    if size is None:
        advice = recommend(probe())
        if advice.option is None:
            raise OmnideskError(f"no model size fits this machine: {advice.reason}")
        size = advice.option.size
        print(f"Recommended for this machine: {size} ({advice.reason})", file=sys.stderr)
    quant = args.quant or PREFERRED_QUANT
    out = models_dir() / (args.name or f"qwen2.5-omni-{size}-{quant}".lower())
    if (out / "omnidesk.json").exists():
        raise OmnideskError(f"{out} is already downloaded (omnidesk models verify {out.name} checks it)")
    meter = ProgressLine()
    try:
        bundle = download_bundle(size, quant, out, listener=meter)
    finally:
        meter.end_line()  # an error is printed on a line of its own
    meter.message(f"done: {bundle.root}")
    print(bundle.root)
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from model.files.store import list_bundles, models_dir

    bundles = list_bundles()
    if not bundles:
        print(f"No bundles in {models_dir()} (omnidesk models import, or models convert --out there)")
    for bundle in bundles:
        print(f"{bundle.name:24} {bundle.thinker_dtype:8} {bundle.size_bytes / 1e9:7.2f} GB  {bundle.state}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from model.files.bundle import Bundle
    from model.files.store import resolve

    bundle = Bundle.open(resolve(args.bundle), verify=True, trust_stamps=False)
    for part, entry in bundle.files.items():
        print(f"ok  {part:14} {entry.path}  sha256 {entry.sha256[:16]}…")
    return 0


def _models_path(args: argparse.Namespace) -> int:
    from model.files.store import models_dir, resolve

    print(resolve(args.bundle) if args.bundle else models_dir())
    return 0


def _models_import(args: argparse.Namespace) -> int:
    from model.files.bundle import MANIFEST
    from model.files.convert import convert_checkpoint
    from model.files.store import models_dir

    checkpoints = [f for f in args.files if f.is_dir()]
    ggufs = [f for f in args.files if f.suffix == ".gguf"]
    unknown = [f for f in args.files if f not in checkpoints and f not in ggufs]
    if len(checkpoints) != 1 or len(ggufs) > 1 or unknown:
        raise OmnideskError(
            "import takes one original checkpoint folder and at most one Thinker .gguf "
            f"(got {', '.join(map(str, args.files))})"
        )
    out = models_dir() / (args.name or checkpoints[0].name)
    if (out / MANIFEST).exists():
        raise OmnideskError(
            f"{out} already exists: choose another --name, "
            f"or remove it first (omnidesk models remove {out.name})"
        )
    if out.exists() and any(out.iterdir()):
        raise OmnideskError(
            f"{out} holds an unfinished bundle: "
            f"remove it (omnidesk models remove {out.name}), then import again"
        )
    bundle = convert_checkpoint(
        checkpoints[0],
        out,
        dtype="f16",
        thinker_gguf=ggufs[0] if ggufs else None,
        report=lambda m: print(m, file=sys.stderr),
    )
    print(bundle.root)
    return 0


def _models_remove(args: argparse.Namespace) -> int:
    from model.files.store import remove, resolve

    path = resolve(args.bundle)
    if not args.yes:
        if not sys.stdin.isatty():
            raise OmnideskError(f"removing {path} needs confirmation: add --yes")
        if input(f"Remove {path} and all its files? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Nothing removed.")
            return 0
    remove(path)
    print(f"Removed {path}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from PySide6.QtCore import QSettings

    from app.cli.doctor import report, where_the_model_runs
    from app.window.preferences import Preferences
    from model.files.bundle import Bundle
    from model.files.store import resolve
    from model.hardware import probe
    from model.placement import bundle_needs

    bundle = None
    if args.models:
        opened = Bundle.open(resolve(args.models))
        bundle = (opened.root.name, bundle_needs(opened, DEFAULT_CONTEXT))
    window = Preferences.load(QSettings("Omnidesk", "Omnidesk"))
    server = args.server or (window.server_url if window.on_server else "")
    key = args.api_key or (window.api_key if server == window.server_url else "")  # not sent elsewhere
    print(where_the_model_runs(server, key, args.models or window.models_folder))
    print(report(probe(), bundle))
    return 0


def _benchmarks() -> dict[str, str]:
    """Each benchmark's name and module: the model's (model/bench/) and the window's (app/bench/)."""
    import app.bench
    import model.bench

    return {
        m.name: f"{package.__name__}.{m.name}"
        for package in (model.bench, app.bench)
        for m in pkgutil.iter_modules(package.__path__)
        if not m.ispkg  # not parts/
    }


def _bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(_benchmarks()[args.name])
    return int(module.main(list(args.options)))


if __name__ == "__main__":
    sys.exit(main())
