"""`omnidesk ask` and `omnidesk chat`: turns of the streaming pipeline in a terminal.

Text streams to stdout; speech goes to a WAV file written chunk by chunk (valid at
every moment) and/or to the speakers, paced as the window's are (app.sound.pacing: started once the
audio queued will last, a sentence at a time on a machine that makes speech slower than it plays,
which is said once); notices (a recording heard only in part) go to stderr. In `chat`, a new
question silences what is still spoken of the last reply. Everything the user gives (options,
the question, `--out`) is checked before the model loads. Ctrl-C during a reply stops the reply
(in `chat`, not the program); at `chat`'s prompt it drops the line and prompts again, as a shell
does (Ctrl-D or /quit leaves); anywhere else it ends the program at once with status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace

from app.cli.ask_media import question_from_args
from app.cli.exit_status import EXIT_INTERRUPTED
from app.cli.interrupts import interrupt_cancels
from app.cli.prompt import Prompt
from app.cli.text_input import checked_text, keep_undecodable_input
from app.remote.conversation import RemoteConversation
from app.shown_text import displayed
from app.sound.pacing import slow_speech_note
from app.sound.playback import Playback
from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.files.store import resolve
from model.media import Question
from model.pipeline import (
    AudioChunk,
    Conversation,
    RecordingCut,
    SpeechCut,
    TextDelta,
    TurnFinished,
    TurnOptions,
)
from model.placement import PlanChoice
from model.prompt_layout import SPEECH_SYSTEM_PROMPT
from model.sampling import SamplingOptions
from model.talker import REFERENCE_SAMPLING, SpeechOptions
from model.thinker_types import ThinkerOptions
from model.wav_writer import WavWriter, check_target

# --greedy is the reference's greedy decoding, generate(thinker_do_sample=False, talker_do_sample=False):
# the Thinker takes the most likely token with no repetition penalty (generate reads the Thinker's own
# generation config, made from its config, which has none); the Talker the most likely code after
# generate's talker_repetition_penalty of 1.05, which greedy decoding keeps.
GREEDY_THINKER = SamplingOptions(greedy=True, repetition_penalty=1.0)
GREEDY_TALKER = replace(REFERENCE_SAMPLING, greedy=True)


def open_conversation(args: argparse.Namespace) -> Conversation | RemoteConversation:
    """The model loaded here from --models, or the one at --server (said on stderr)."""
    persona = checked_text(args.system or "", "--system")
    if args.server:
        remote = RemoteConversation(args.server, args.api_key, args.server_model, persona)
        print(f"omnidesk: the model runs at {remote.base_url} ({remote.model})", file=sys.stderr)
        return remote
    if args.models is None:
        raise OmnideskError("give --models BUNDLE (omnidesk models list shows them), or --server URL")
    options = ThinkerOptions(n_ctx=args.context, n_gpu_layers=args.gpu_layers, n_threads=args.threads)
    bundle = Bundle.open(resolve(args.models))
    if args.text_only and persona:  # no speech: the user's prompt may be the system prompt itself
        return Conversation.planned(bundle, plan_choice(args), options, system=persona)
    return Conversation.planned(
        bundle, plan_choice(args), options, persona=persona, system=SPEECH_SYSTEM_PROMPT
    )


def plan_choice(args: argparse.Namespace) -> PlanChoice:
    """Where speech runs and how (the reference's path, exact, for --full-utterance)."""
    return PlanChoice(
        speech_device=args.speech_device,
        quality="exact" if args.full_utterance else args.speech_quality,
        thinker_gpu_layers=args.gpu_layers,
        thinker_threads=args.threads,
        detail=args.detail,
        quick_start=args.quick_start,
    )


def turn_options(args: argparse.Namespace) -> TurnOptions:
    thinker, talker = SamplingOptions(), REFERENCE_SAMPLING
    if args.greedy:
        thinker, talker = GREEDY_THINKER, GREEDY_TALKER
    if args.max_tokens < 1 or args.max_codes < 1:
        raise OmnideskError("--max-tokens and --max-codes must be at least 1")
    return TurnOptions(
        speak=not args.text_only,
        max_tokens=args.max_tokens,
        sampling=replace(thinker, seed=args.seed),
        speech=SpeechOptions(voice=args.voice, max_codes=args.max_codes, sampling=talker),
        seed=args.seed,
        full_utterance=args.full_utterance,
    )


def open_speakers(args: argparse.Namespace) -> Playback | None:
    if not args.play or args.text_only:
        return None
    try:
        return Playback(OUTPUT_SAMPLE_RATE)
    except OmnideskError as exc:
        print(f"omnidesk: {exc}; replying without playing", file=sys.stderr)
        return None


def run_ask(args: argparse.Namespace) -> int:
    options = turn_options(args)
    question = question_from_args(args)  # files and devices first: a bad one fails before loading
    out_path = args.out if args.out and not args.text_only else None
    if out_path is not None:
        check_target(out_path)
    conversation = open_conversation(args)
    speakers = open_speakers(args)
    out = WavWriter(out_path, OUTPUT_SAMPLE_RATE) if out_path is not None else None
    try:
        finished, marks = speak_turn(conversation, question, options, speakers, out)
        if options.speak and finished.reason != "error" and isinstance(conversation, Conversation):
            say_where_speech_runs(conversation)
        say_if_slow(speakers, conversation)
    finally:
        if out is not None:
            out.close()
        if speakers is not None:
            speakers.wait(600)
            speakers.close()
    if finished.reason == "error":
        raise OmnideskError(finished.error)
    if finished.reason == "context_full" and isinstance(conversation, Conversation):
        raise OmnideskError(
            f"the question does not fit in the {conversation.thinker.n_ctx}-token context: use --context"
        )
    if finished.reason == "cancelled":
        return EXIT_INTERRUPTED
    if args.json:
        record = {
            "prompt_ids": list(finished.prompt_ids),
            "reply_ids": list(finished.reply_ids),
            "text": finished.text,
            "codes": list(finished.codes),
            "finish_reason": finished.reason,
            "prompt_tokens_decoded": finished.prompt_decoded,
            "first_token_s": marks.get("first_text"),
            "tokens_per_s": finished.tokens_per_s,
            "marks": marks,
        }
        print(json.dumps(record, ensure_ascii=False))
    return 0


def run_chat(args: argparse.Namespace) -> int:
    options = turn_options(args)
    conversation = open_conversation(args)
    if isinstance(conversation, Conversation):
        moves = conversation.prepare(None if args.text_only else args.voice)  # before the first question
        if not args.text_only:
            say_where_speech_runs(conversation, moves)
    speakers = open_speakers(args)
    said_slow = False
    keep_undecodable_input()
    print("Omnidesk: ask anything. Ctrl-C stops a reply; Ctrl-D (or /quit) leaves.", file=sys.stderr)
    prompt = Prompt("you> ")  # Ctrl-C there drops the line and prompts again, as in a shell
    while True:
        try:
            question = checked_text(prompt.line(), "that line")
        except EOFError:
            print(file=sys.stderr)
            break
        except OmnideskError as exc:
            print(f"omnidesk: {exc}", file=sys.stderr)
            continue
        if question.strip() in ("/quit", "/exit"):
            break
        if not question.strip():
            continue
        print("omnidesk> ", end="", flush=True)
        if speakers is not None:  # a new question silences what is still spoken
            speakers.stop()
        finished, _ = speak_turn(conversation, question, options, speakers, None)
        said_slow = said_slow or say_if_slow(speakers, conversation)
        if finished.reason == "cancelled":
            if speakers is not None:
                speakers.stop()
            print(" [stopped]", file=sys.stderr)
        elif finished.reason in ("error", "context_full"):
            print(
                f"omnidesk: {finished.error or 'the conversation is too long for the context'}",
                file=sys.stderr,
            )
    if speakers is not None:
        speakers.close()
    return 0


def say_where_speech_runs(conversation: Conversation, moves: Sequence[str] = ()) -> None:
    """Where speech is made (stderr), and why not on the GPU where the plan says why (a CPU build of
    torch, a GPU too small) or a stage moved to the CPU after running out of GPU memory (`moves`)."""
    print(f"omnidesk: speech on {conversation.plan.speech_label}", file=sys.stderr)
    for note in dict.fromkeys((*conversation.plan.notes, *moves)):  # a move is also the plan's note
        print(f"omnidesk: {note}", file=sys.stderr)


def say_if_slow(speakers: Playback | None, conversation: Conversation | RemoteConversation) -> bool:
    """Tell the user if the last reply was made slower than it plays (and what would help); whether told."""
    if speakers is None or not speakers.state().slow or isinstance(conversation, RemoteConversation):
        return False  # (a server's speed is its own: the note's advice is for this machine)
    print(f"omnidesk: {slow_speech_note(conversation.plan.profile == 'fast')}", file=sys.stderr)
    return True


def speak_turn(
    conversation: Conversation | RemoteConversation,
    question: str | Question,
    options: TurnOptions,
    speakers: Playback | None,
    out: WavWriter | None,
) -> tuple[TurnFinished, dict[str, float]]:
    """Run one turn: text to stdout, audio to the sinks (the speakers play on after it returns);
    Ctrl-C cancels the turn. A WAV file the disk stops taking ends the writing, not the reply: its
    error is raised after the turn."""
    finished: TurnFinished | None = None
    unwritten: OmnideskError | None = None
    if speakers is not None:
        speakers.begin()
    with interrupt_cancels(conversation.cancel):
        for event in conversation.turn(question, options):
            if isinstance(event, TextDelta):
                sys.stdout.write(displayed(event.text))  # a reply is untrusted: no escape sequences
                sys.stdout.flush()
            elif isinstance(event, AudioChunk):
                if out is not None and unwritten is None:
                    try:
                        out.write(event.samples)
                    except OmnideskError as exc:
                        unwritten = exc
                if speakers is not None:
                    speakers.write(event.samples)
            elif isinstance(event, RecordingCut | SpeechCut):
                print(f"omnidesk: {event.message}", file=sys.stderr)
            elif isinstance(event, TurnFinished):
                finished = event
    if speakers is not None:
        speakers.finish()
    sys.stdout.write("\n")
    if unwritten is not None:
        raise unwritten
    assert finished is not None
    return finished, {name: round(seconds, 4) for name, seconds in finished.marks.items()}
