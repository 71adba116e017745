"""The web UI in headless Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium):
load the page, send a message and watch the reply stream in, a second turn, stop a reply,
start a new chat; screenshots go to tests/out/.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from serverutil import ServerThread

from runtime.cli import build_parser, server_defaults
from runtime.engine import Engine
from runtime.sampling import SamplingParams

OUT = Path(__file__).parent / "out"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REPLY_TOKENS = 96


@pytest.fixture(scope="module")
def engine(smollm2_path: Path) -> Iterator[Engine]:
    eng = Engine.load(smollm2_path, n_ctx=2048)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed: sh tools/debian-packages.sh")
    profile = tempfile.mkdtemp(prefix="llamapack-chromium-")
    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,860"):
        opts.add_argument(flag)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], object], seconds: float = 60, what: str = "condition") -> object:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def state(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def stored_chats(driver: webdriver.Chrome) -> list[dict]:
    return json.loads(driver.execute_script("return localStorage.getItem('llamapack.chats.v1') || '[]'"))


def click(driver: webdriver.Chrome, element_id: str, seconds: float = 10) -> None:
    """Clicks once the element can take it (a loaded machine may still be laying the page out)."""
    def attempt() -> bool:
        try:
            driver.find_element(By.ID, element_id).click()
            return True
        except (ElementNotInteractableException, ElementClickInterceptedException):
            return False
    wait_for(attempt, seconds, f"#{element_id} to take a click")


def send(driver: webdriver.Chrome, text: str) -> None:
    box = wait_for(lambda: (lambda e: e if e.is_displayed() and e.is_enabled() else None)(
        driver.find_element(By.ID, "input")), 10, "the input box")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def test_chat_in_the_browser(browser: webdriver.Chrome, server: ServerThread, engine: Engine) -> None:
    OUT.mkdir(exist_ok=True)
    d = browser
    d.get(server.url + "/")
    d.execute_script("localStorage.clear(); localStorage.setItem('llamapack.settings.v2', arguments[0])",
                     json.dumps({"temperature": 0, "max_tokens": REPLY_TOKENS}))
    d.get(server.url + "/")
    wait_for(lambda: d.find_element(By.ID, "model-name").text not in ("", "connecting…"), 10, "model info")
    assert d.find_element(By.ID, "empty").is_displayed()
    d.save_screenshot(str(OUT / "webui-empty.png"))

    # a reply streams in: the text grows while the page says it is generating
    question = "Write a Python function that adds two numbers."
    send(d, question)
    wait_for(lambda: state(d) == "generating", 10, "generation to start")
    lengths = set()
    while state(d) == "generating":
        bodies = d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")
        if bodies:
            lengths.add(len(bodies[-1].text))
        time.sleep(0.02)
    assert len(lengths - {0}) >= 2, "the reply did not arrive piece by piece"
    messages = [{"role": "user", "content": question}]
    chunks = list(engine_reference(engine, messages))
    chats = stored_chats(d)
    assert chats[0]["messages"][1]["content"] == "".join(c.text for c in chunks)  # greedy, token for token
    meta = d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text
    assert "tok/s" in meta and "prompt" in meta
    if "```" in chats[0]["messages"][1]["content"]:
        assert d.find_elements(By.CSS_SELECTOR, ".msg.assistant .code pre code")
    d.save_screenshot(str(OUT / "webui-chat.png"))

    # a second turn: the history goes with it, and the server's cache holds the first turn
    send(d, "Now make it subtract.")
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 4, 60, "second reply")
    assert "cached" in d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")[-1].text
    assert len(stored_chats(d)[0]["messages"]) == 4

    # stop a long reply
    d.execute_script("localStorage.setItem('llamapack.settings.v2', arguments[0])",
                     json.dumps({"temperature": 0.8, "max_tokens": -1, "seed": 5}))
    d.refresh()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, ".msg"), 10, "the conversation to reload")
    send(d, "Write a very long story about a dragon and a knight.")
    wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .body")[-1].text) > 40, 30, "text")
    click(d, "stop")
    wait_for(lambda: state(d) == "idle", 5, "the stop button to stop the reply")
    assert "stopped" in d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")[-1].text
    wait_for(lambda: not server.app.state.scheduler.status()["slots_processing"], 3, "the server to stop generating")
    d.save_screenshot(str(OUT / "webui-stopped.png"))

    # settings panel
    click(d, "settings-button")
    time.sleep(0.3)
    assert d.find_element(By.ID, "system-prompt").is_displayed()
    d.save_screenshot(str(OUT / "webui-settings.png"))
    click(d, "close-settings")

    # a new chat: an empty page, and the old conversation in the history
    click(d, "new-chat")
    assert not d.find_elements(By.CSS_SELECTOR, ".msg")
    assert d.find_element(By.ID, "empty").is_displayed()
    assert len(d.find_elements(By.CSS_SELECTOR, ".history-item")) == 1
    send(d, "Hi!")
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, "reply")
    assert len(d.find_elements(By.CSS_SELECTOR, ".history-item")) == 2
    assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def engine_reference(engine: Engine, messages: list[dict[str, str]]):  # the server is idle by now
    """The engine's own greedy reply, computed as the server did: the prompt in one batch.
    (Reusing the cache, only the last prompt token would run alone; a batch and single
    rows round differently in the last bits, enough to flip a near-tie in greedy choice.)"""
    engine.reset()
    return engine.stream_chat(messages, max_tokens=REPLY_TOKENS, params=SamplingParams(temp=0.0))


@pytest.fixture(scope="module")
def greedy_server(smollm2_path: Path) -> Iterator[ServerThread]:
    """A server started as `... --temp 0 -n 5` (or with that in its .args)."""
    args = build_parser().parse_args(["-m", str(smollm2_path), "--temp", "0", "-n", "5"])
    eng = Engine.load(smollm2_path, n_ctx=512)
    with ServerThread(eng, defaults=server_defaults(args)) as srv:
        yield srv
    eng.close()


def test_the_page_starts_from_the_servers_defaults(browser: webdriver.Chrome, greedy_server: ServerThread,
                                                   engine: Engine, smollm2_path: Path) -> None:
    """The page hard-coded temperature 0.8; now it shows /props' settings and sends only what the
    user changed. Settings an older page saved (all of them, its defaults too) keep only the changes."""
    d = browser
    d.get(greedy_server.url + "/")
    old = {"system": "", "temperature": 0.8, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, "top_k": 33,
           "max_tokens": -1, "seed": -1, "api_key": ""}
    d.execute_script("localStorage.clear(); localStorage.setItem('llamapack.settings.v1', arguments[0])",
                     json.dumps(old))
    d.get(greedy_server.url + "/")
    wait_for(lambda: d.find_element(By.ID, "model-name").text == smollm2_path.name, 10, "model info")
    click(d, "settings-button")
    wait_for(lambda: d.find_element(By.ID, "out-temperature").text == "0.00", 5, "the server's temperature")
    assert d.find_element(By.ID, "max_tokens").get_attribute("value") == "5"
    assert d.find_element(By.ID, "top_k").get_attribute("value") == "33"  # a choice made on the old page
    click(d, "close-settings")
    send(d, "Hi!")
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, "reply")
    engine.reset()
    expected = engine.stream_chat([{"role": "user", "content": "Hi!"}], max_tokens=5,
                                  params=SamplingParams(temp=0.0, top_k=33))
    assert stored_chats(d)[0]["messages"][1]["content"] == "".join(c.text for c in expected)
    assert "5 tokens" in d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text


def test_the_replys_thinking_is_shown_folded(browser: webdriver.Chrome, smollm2_path: Path) -> None:
    """A template whose generation prompt opens <think> (DeepSeek-R1's way): the reply streams as
    reasoning_content; the page shows it in a Thinking block, and sends back only the content."""
    from tests.test_reasoning import R1_LIKE

    args = build_parser().parse_args(["-m", str(smollm2_path), "--temp", "0", "-n", "12"])
    eng = Engine.load(smollm2_path, n_ctx=512, chat_template=R1_LIKE)
    try:
        with ServerThread(eng, defaults=server_defaults(args)) as srv:
            api = requests.post(srv.url + "/v1/chat/completions", timeout=60,
                                json={"messages": [{"role": "user", "content": "Hi!"}]}).json()["choices"][0]["message"]
            assert api["reasoning_content"]  # (12 tokens of thinking: SmolLM2 does not close the block)
            d = browser
            d.get(srv.url + "/")
            d.execute_script("localStorage.clear()")
            d.get(srv.url + "/")
            send(d, "Hi!")
            wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, "reply")
            block = d.find_element(By.CSS_SELECTOR, ".msg.assistant details.thinking")
            assert block.find_element(By.TAG_NAME, "summary").text == "Thinking"
            # all the reply is thinking (SmolLM2 does not close the block): it stays open, and no
            # "(no reply)" says otherwise
            assert block.get_attribute("open") is not None and "(no reply)" not in d.find_element(
                By.CSS_SELECTOR, ".msg.assistant .body").text
            # what the person does with it outlasts a repaint of the page (each token was one)
            block.find_element(By.TAG_NAME, "summary").click()
            d.execute_script("renderAll()")
            block = d.find_element(By.CSS_SELECTOR, ".msg.assistant details.thinking")
            assert block.get_attribute("open") is None
            text = d.execute_script("return document.querySelector('.msg.assistant .thinking-text').textContent")
            assert text == api["reasoning_content"]
            assert stored_chats(d)[0]["messages"][1]["content"] == api["content"]
            d.execute_script("localStorage.clear()")
    finally:
        eng.close()


def test_a_stream_cut_short_is_said(browser: webdriver.Chrome, server: ServerThread) -> None:
    """A stream that closes without a finish reason (a proxy, the network) looked like a whole reply."""
    d = browser
    d.get(server.url + "/")
    d.execute_script("localStorage.clear()")
    d.get(server.url + "/")
    d.execute_script("""const real = window.fetch;
        window.fetch = (url, opts) => String(url).includes('/chat/completions')
          ? Promise.resolve(new Response(new ReadableStream({start(c) {
              c.enqueue(new TextEncoder().encode('data: {"choices": [{"index": 0, "delta": {"content": "Half a"}}]}\\n\\n'));
              c.close(); }}), {status: 200, headers: {"Content-Type": "text/event-stream"}}))
          : real(url, opts);""")
    send(d, "Hi!")
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 30, "reply")
    meta = d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text
    assert "stopped before it was finished" in meta and "Half a" in d.find_element(By.CSS_SELECTOR, ".msg.assistant").text
    d.execute_script("localStorage.clear()")


def test_a_full_storage_is_said(browser: webdriver.Chrome, server: ServerThread) -> None:
    """Storage full: the reply is on the screen but not kept; it was lost at the next load without a
    word. Now a notice says so, until saving works again."""
    d = browser
    d.get(server.url + "/")
    d.execute_script("localStorage.clear()")
    d.get(server.url + "/")
    d.execute_script("""let i = 0; const chunk = 'x'.repeat(1 << 20);
        try { for (;;) localStorage.setItem('filler' + i++, chunk); } catch (e) {}
        for (const size of [1 << 12, 1 << 8, 16, 1]) {
          try { for (let k = 0; ; k++) localStorage.setItem('small' + size + '.' + k, 'x'.repeat(size)); } catch (e) {}
        }""")
    send(d, "Hi!")
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, "reply")
    n = wait_for(lambda: d.find_elements(By.ID, "notice"), 10, "the notice")[0]
    assert n.is_displayed() and "storage is full" in n.text
    d.execute_script("Object.keys(localStorage).filter(k => k.startsWith('filler') || k.startsWith('small'))"
                     ".forEach(k => localStorage.removeItem(k))")
    click(d, "new-chat")
    send(d, "Hello again")
    wait_for(lambda: state(d) == "idle" and not d.find_element(By.ID, "notice").is_displayed(), 60, "saved again")
    d.execute_script("localStorage.clear()")


def test_markdown_renderer_is_safe(browser: webdriver.Chrome, server: ServerThread) -> None:
    d = browser
    d.get(server.url + "/")
    render = lambda text: d.execute_script("return Markdown.render(arguments[0])", text)  # noqa: E731
    html = render("<script>alert(1)</script> <img src=x onerror=alert(1)>")
    assert "<script" not in html and "<img" not in html and "&lt;script&gt;" in html
    html = render("[click](javascript:alert(1)) and [ok](https://example.org)")
    assert 'href="javascript' not in html and 'href="https://example.org"' in html
    html = render('[x](https://a.b/" onmouseover="alert(1))')
    assert "onmouseover=\"" not in html
    html = render("# Title\n\n**bold** and *it* and `a<b`\n\n```python\nif a < b:\n    pass\n```\n\n- one\n- two\n\n"
                  "| a | b |\n|---|---|\n| 1 | 2 |")
    for part in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<code>a&lt;b</code>",
                 "if a &lt; b:\n    pass", "<li>one</li>", "<td>1</td>", "lang-python"):
        assert part in html, part
    # what replies write and CommonMark (markdown-it) renders so: a code block inside a step,
    # a * that is no emphasis, underscores and parentheses in URLs, short table rules, a fence of
    # four, escapes, bold around italics
    html = render("1. Install:\n   ```bash\n   pip install x\n   python -m venv .venv\n   ```\n2. Run")
    assert "<li>Install:<div class=\"code\">" in html and "pip install x\npython -m venv .venv</code>" in html
    for text in ("2 * 3 * 4 = 24", "Delete *.tmp and *.log files.", "*args and **kwargs"):
        assert "<em>" not in render(text) and "<strong>" not in render(text), text
    html = render("[docs](https://docs.python.org/3/library/__main__.html) and foo_ and "
                  "[Python](https://en.wikipedia.org/wiki/Python_(programming_language)).")
    assert 'href="https://docs.python.org/3/library/__main__.html"' in html and "foo_ and" in html
    assert 'href="https://en.wikipedia.org/wiki/Python_(programming_language)"' in html and "</a>." in html
    assert "<table>" in render("| L | R |\n|:-|-:|\n| a | b |")
    html = render("````markdown\n```python\nprint(1)\n```\n````\nAfter.")
    assert "```python\nprint(1)\n```</code>" in html and "<p>After.</p>" in html
    assert render("\\*literally\\*") == "<p>*literally*</p>"
    assert render("**bold *it* bold**") == "<p><strong>bold <em>it</em> bold</strong></p>"


@pytest.fixture(scope="module")
def small_server(smollm2_path: Path) -> Iterator[ServerThread]:
    """A server whose context (256) a few turns outgrow, with an API key."""
    eng = Engine.load(smollm2_path, n_ctx=256)
    with ServerThread(eng, api_key="k") as srv:
        yield srv
    eng.close()


def test_a_conversation_past_the_context_goes_on(browser: webdriver.Chrome, small_server: ServerThread) -> None:
    """A question too long for the context fails alone: it is not sent again with the next one.
    A conversation that outgrows the context sends its latest exchanges and says how many earlier
    messages it left out (it stopped working for good before). The page asks for a missing API key."""
    d = browser
    d.get(small_server.url + "/")
    d.execute_script("localStorage.clear()")
    d.get(small_server.url + "/")
    wait_for(lambda: d.find_element(By.ID, "model-name").text == "API key needed: set it in Settings", 10,
             "the page to ask for the key")
    d.execute_script("localStorage.setItem('llamapack.settings.v2', arguments[0])",
                     json.dumps({"temperature": 0, "max_tokens": 24, "api_key": "k"}))
    d.get(small_server.url + "/")
    wait_for(lambda: d.find_element(By.ID, "model-name").text.endswith(".gguf"), 10, "model info")

    def turn(text: str) -> str:
        n = len(d.find_elements(By.CSS_SELECTOR, ".msg"))
        d.execute_script("document.getElementById('input').value = arguments[0];"
                         "document.getElementById('composer').requestSubmit()", text)
        wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == n + 2, 60, text)
        return d.find_elements(By.CSS_SELECTOR, ".msg.assistant .meta")[-1].text

    assert "context holds 256" in turn("word " * 300)  # alone too long: the error, once
    assert "tok/s" in turn("Say hi.")                   # the failed question is not sent again
    for i in range(8):                                  # outgrow the context: the oldest turns go
        meta = turn(f"Turn {i}: tell me one more fact about the sea, in a sentence or two.")
        assert "tok/s" in meta, meta
    assert "earlier messages left out" in meta
    assert len(stored_chats(d)[0]["messages"]) == 2 * 10  # the page keeps the whole conversation


def test_two_tabs_keep_each_others_conversations(browser: webdriver.Chrome, server: ServerThread) -> None:
    """The packed file double-clicked twice: two pages, one store. Each tab's save kept only its own
    conversations (the other's were lost); now both stay, and each list shows the other's."""
    d = browser
    d.get(server.url + "/")
    d.execute_script("localStorage.clear(); localStorage.setItem('llamapack.settings.v2', arguments[0])",
                     json.dumps({"temperature": 0, "max_tokens": 4}))
    d.get(server.url + "/")
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    d.get(server.url + "/")  # both pages loaded before either saves
    try:
        for handle, text in ((first, "Tab A: name a fruit."), (d.window_handles[-1], "Tab B: name a tree.")):
            d.switch_to.window(handle)
            send(d, text)
            wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, text)
        titles = sorted(c["title"] for c in stored_chats(d))
        assert titles == ["Tab A: name a fruit.", "Tab B: name a tree."]
        d.switch_to.window(first)  # the other tab's conversation shows up in this one's list
        wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, ".history-item")) == 2, 10, "both conversations")
    finally:
        d.switch_to.window(d.window_handles[-1])
        d.close()
        d.switch_to.window(first)


def test_narrow_screen_list_closes_and_settings_are_checked(browser: webdriver.Chrome, server: ServerThread) -> None:
    """375 px wide: the conversation list opens over the page and closes with Esc or a tap beside it
    (it could not be closed). Number settings: 1e3 is 1000 (it was read as 1); -5 tokens is refused
    in the panel, not sent. A title cut at 60 characters does not split an emoji."""
    d = browser
    d.get(server.url + "/")
    d.execute_script("localStorage.clear()")
    d.set_window_size(375, 800)
    try:
        d.get(server.url + "/")
        is_open = lambda: "sidebar-open" in d.find_element(By.TAG_NAME, "body").get_attribute("class")  # noqa: E731
        click(d, "toggle-sidebar")
        assert is_open()
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        wait_for(lambda: not is_open(), 5, "Esc to close the list")
        click(d, "toggle-sidebar")
        assert is_open()
        d.execute_script("document.getElementById('messages').click()")
        wait_for(lambda: not is_open(), 5, "a tap beside the list to close it")
    finally:
        d.set_window_size(1280, 860)
    click(d, "settings-button")
    field = d.find_element(By.ID, "max_tokens")
    for typed, kept in (("1e3", "1000"), ("-5", "1000"), ("7.5", "1000"), ("", "-1")):  # what the user leaves
        d.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))",
                         field, typed)
        assert field.get_attribute("value") == kept, typed
    settings = json.loads(d.execute_script("return localStorage.getItem('llamapack.settings.v2')"))
    assert "max_tokens" not in settings  # cleared: the server's default again
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # Esc closes the settings too
    wait_for(lambda: "settings-open" not in d.find_element(By.TAG_NAME, "body").get_attribute("class"), 5,
             "Esc to close the settings")
    click(d, "settings-button")
    click(d, "close-settings")
    title = "a" * 59 + "🎉 party"
    d.execute_script("localStorage.setItem('llamapack.settings.v2', '{\"max_tokens\": 1}')")
    d.get(server.url + "/")
    send(d, title)
    wait_for(lambda: state(d) == "idle" and len(d.find_elements(By.CSS_SELECTOR, ".msg")) == 2, 60, "reply")
    assert stored_chats(d)[0]["title"] == "a" * 59 + "🎉"
    assert d.execute_script("return encodeURIComponent(document.title)")  # no lone surrogate in it
    html = d.execute_script("return Markdown.render('## Using C#')")
    assert html == "<h2>Using C#</h2>"
