"""Your own assistant, end to end, with the real model, real vLLM, the openai client and a
real browser: a JSONL of its own and an assistant file, `qtune data check`, a short
`qtune finetune` with QWTH and with LoRA, `qtune serve` of both, answers with and without
a system message, `qtune eval --assistant`, and the assistant in the UI's Chat and
Compare tabs, its two adapters paired."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ui_fixtures import free_port

from qtune.cli import main

pytestmark = [pytest.mark.slow]

WORDS = ("apple", "river", "candle", "pepper", "window", "garden", "silver", "rocket",
         "basket", "pillow", "ladder", "marble", "violin", "carpet", "helmet", "jacket",
         "kitten", "lemon", "magnet", "napkin", "orange", "parrot", "quartz", "saddle")
SYSTEM_PROMPT = "You repeat the word after 'Echo:' and nothing else, in lower case."
ASSISTANT = f"""name = "echo"
title = "Echo desk"
system_prompt = "{SYSTEM_PROMPT}"
train = "echo.jsonl"
evaluation = ["heldout_loss", "exact_match"]
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, embedded_model):
    """(assistant file, folder of the two trained adapters)."""
    folder = tmp_path_factory.mktemp("own-assistant")
    rows = [{"messages": [{"role": "user", "content": f"Echo: {w}"},
                          {"role": "assistant", "content": w}]} for w in WORDS]
    (folder / "echo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assistant = folder / "echo.toml"
    assistant.write_text(ASSISTANT)
    adapters = folder / "adapters"
    for method in ("qwth", "lora"):
        assert main(["finetune", "--assistant", str(assistant), "--method", method,
                     "--model", str(embedded_model), "--steps", "3", "--batch-size", "2",
                     "--seq-len", "64", "--warmup", "1", "--eval-every", "0",
                     "--eval-batches", "1", "--save-every", "0", "--mixed-precision", "no",
                     "--output", str(adapters / f"echo-{method}")]) == 0
    return assistant, adapters


def test_data_check_passes_the_file_and_refuses_a_bad_row(trained, tmp_path, capsys):
    assistant, _ = trained
    assert main(["data", "check", str(assistant), "--no-tokens"]) == 0
    assert "24 good rows, 0 bad" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "Echo: x"}]}\n')
    assert main(["data", "check", str(bad), "--no-tokens"]) == 1
    assert f"{bad}:1: no assistant message" in capsys.readouterr().out


def test_each_adapter_records_its_assistant(trained):
    from qtune.assistants import adapter_assistant

    _, adapters = trained
    for method in ("qwth", "lora"):
        recorded = adapter_assistant(adapters / f"echo-{method}")
        assert (recorded.name, recorded.title, recorded.system_prompt) == (
            "echo", "Echo desk", SYSTEM_PROMPT)


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    from qtune.serve.server import ServeConfig, VLLMServer

    _, adapters = trained
    logs = tmp_path_factory.mktemp("own-serve")
    server = VLLMServer(ServeConfig(port=free_port(), adapters_dir=adapters,
                                    log_path=logs / "vllm.log"))
    with server:
        server.start(wait=True)
        yield server


def test_the_endpoint_answers_as_the_assistant_with_or_without_its_system_prompt(served):
    from openai import OpenAI

    client = OpenAI(base_url=served.api_base, api_key="none")
    assert {"echo-qwth", "echo-lora"} <= {m.id for m in client.models.list()}
    question = {"role": "user", "content": "Echo: garden"}

    def ask(model: str, *messages: dict):
        return client.chat.completions.create(model=model, messages=list(messages),
                                              max_tokens=12, temperature=0)

    for model in ("echo-qwth", "echo-lora"):
        bare = ask(model, question)
        prompted = ask(model, {"role": "system", "content": SYSTEM_PROMPT}, question)
        assert bare.choices[0].message.content  # it answers
        assert bare.usage.prompt_tokens == prompted.usage.prompt_tokens
        assert bare.choices[0].message.content == prompted.choices[0].message.content
        other = ask(model, {"role": "system", "content": "Reply in French."}, question)
        assert other.usage.prompt_tokens != prompted.usage.prompt_tokens


def test_eval_scores_the_assistant_s_adapters_and_the_base(trained, served, capsys):
    assistant, _ = trained
    assert main(["eval", "--assistant", str(assistant), "--api-base", served.api_base,
                 "--max-tokens", "8", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "Echo desk (echo)" in out and "held-out rows" in out
    table = [line for line in out.splitlines() if line.startswith("| echo-")]
    assert {line.split("|")[1].strip() for line in table} == {"echo-qwth", "echo-lora"}
    assert all("%" in line for line in table)


@pytest.mark.browser
def test_the_assistant_is_in_the_ui_chat_and_compare_tabs(served, tmp_path):
    from playwright.sync_api import sync_playwright
    from qtune.feedback.store import FeedbackStore
    from qtune.ui.app import QtuneUI, launch

    ui = QtuneUI(api_base=served.api_base, store=FeedbackStore(tmp_path / "feedback.db"),
                 bootstrap_rounds=20, max_tokens=16)
    port = free_port()
    demo = launch(ui, port=port, block=False)
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True,
                       capture_output=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#status:has-text('Connected')")
            page.locator("#assistant input").click()
            page.get_by_role("option", name="Echo desk · echo").click()
            page.get_by_role("tab", name="Chat").click()
            page.wait_for_function(
                "() => document.querySelector('#chat-model input').value.includes('echo-')")
            # The new assistant's system prompt is shown: its switch, which clears the
            # chat and its input, is complete before the question is typed.
            page.get_by_text("Generation settings").click()
            page.wait_for_function(
                "(prompt) => [...document.querySelectorAll('textarea')]"
                ".some(t => t.value === prompt)", arg=SYSTEM_PROMPT)
            page.locator("#chat-input textarea").fill("Echo: lemon")
            page.locator("#chat-send").click()
            page.wait_for_selector("#chat-bot [data-testid='bot']")
            page.get_by_role("tab", name="Compare").click()
            page.wait_for_function(  # the pickers fill after the assistant's models load
                "() => document.querySelector('#compare-model-a input').value.includes('echo-')"
                " && document.querySelector('#compare-model-b input').value.includes('echo-')")
            shown = [page.locator(f"#compare-model-{side} input").input_value()
                     for side in ("a", "b")]
            assert "echo-qwth" in shown[0] and "echo-lora" in shown[1]
            browser.close()
    finally:
        demo.close()
    assert ui.assistants["echo"].title == "Echo desk"
    assert ui.change_assistant("echo")[0] == SYSTEM_PROMPT  # the system-prompt box
    assert not ui.crisis_screened("echo")
