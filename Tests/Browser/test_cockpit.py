"""The Cockpit page in a real browser: headless Chromium, driven by Selenium, logs in to the
testbed's cockpit-ws and works the page; machinectl in the testbed says what happened.

scripts/cockpit-test sets up the testbed (cockpit-ws on its loopback, a bridge to it on the
host's 127.0.0.1) and passes its address and accounts in the environment."""

import json
import os
import re
import subprocess
import time
import unittest

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["NSPAWNCTL_COCKPIT_URL"]
TESTBED = os.environ["NSPAWNCTL_TESTBED"]
REPO = os.environ["NSPAWNCTL_REPO"]
SHOTS = os.environ.get("NSPAWNCTL_SCREENSHOTS", "")
PASSWORD = os.environ["NSPAWNCTL_COCKPIT_PASSWORD"]


def testbed(*command):
    return subprocess.run([f"{REPO}/scripts/testbed", "exec", "--name", TESTBED, "--", *command],
                          capture_output=True, text=True, check=False)


def nspawnctl(*arguments):
    return testbed("/usr/local/bin/nspawnctl", *arguments)


def machine_state(name):
    """machined's state of `name`, or "stopped" when machined says it has no such machine; any
    other failure (a broken testbed exec) fails the test rather than passing for stopped."""
    shown = testbed("machinectl", "show", name, "-p", "State", "--value")
    if shown.returncode == 0:
        return shown.stdout.strip()
    if f"No machine '{name}' known" in shown.stderr:
        return "stopped"
    raise AssertionError(f"machinectl show {name} failed: {shown.stderr}")


def requests_to(route):
    """How many requests nspawnd has answered on `route`, from its own /v1/metrics."""
    metrics = testbed("curl", "-s", "--unix-socket", "/run/nspawnd/nspawnd.sock", "http://localhost/v1/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("nspawnd_requests_total{") and f'route="{route}"' in line)


SETTINGS = "[Exec]\nBoot=no\nParameters=/bin/sleep 1000000\n"


class CockpitPage(unittest.TestCase):
    machine = "e2e-web"

    @classmethod
    def setUpClass(cls):
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
            options.add_argument(flag)
        options.binary_location = "/usr/bin/chromium"
        service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
        cls.browser = webdriver.Chrome(options=options, service=service)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()

    def setUp(self):
        # The table is drawn anew on events and stats: an element read mid-redraw is read again.
        self.wait = WebDriverWait(self.browser, 30, ignored_exceptions=[StaleElementReferenceException])

    def tearDown(self):
        # Each test starts from the same machine: stopped, its own settings, no pending resize.
        testbed("machinectl", "terminate", self.machine)
        nspawnctl("resize", self.machine, "--revert")
        testbed("sh", "-c", f"printf '{SETTINGS}' > /etc/systemd/nspawn/{self.machine}.nspawn")

    def log_in(self, user):
        self.browser.switch_to.default_content()
        self.browser.delete_all_cookies()
        self.browser.get(URL + "/")
        self.wait.until(EC.visibility_of_element_located((By.ID, "login-user-input"))).send_keys(user)
        self.browser.find_element(By.ID, "login-password-input").send_keys(PASSWORD)
        self.browser.find_element(By.ID, "login-button").click()
        try:
            self.wait.until(EC.presence_of_element_located((By.ID, "content")))
        except Exception:
            self.shot(f"login-{user}-failed")
            said = self.browser.find_elements(By.ID, "login-error-message")
            self.fail(f"{user} could not log in: {said[0].text if said else self.browser.page_source[:500]}")
        self.browser.get(URL + "/nspawnctl")
        self.wait.until(EC.frame_to_be_available_and_switch_to_it(
            (By.CSS_SELECTOR, 'iframe[name="cockpit1:localhost/nspawnctl"]')))
        # The page knows who is logged in once it has said so.
        self.wait.until(lambda _: self.find("who").text)

    def find(self, element_id):
        return self.browser.find_element(By.ID, element_id)

    def row(self, name=None):
        return self.wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, f'tr[data-machine="{name or self.machine}"]')))

    def click(self, action, name=None, within="#machines"):
        """A real click on an enabled, shown button. Events and stats draw the table anew every
        few seconds; a click that meets a redraw is tried again (the wait ignores stale elements)."""
        selector = f'{within} button[data-action="{action}"][data-machine="{name or self.machine}"]'

        def clicked(browser):
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            if not found or not found[0].is_displayed() or not found[0].is_enabled():
                return False
            found[0].click()
            return True
        self.until(clicked, f"{selector} can be clicked", name)

    def confirm(self, expected_title):
        dialog = self.wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        self.assertEqual(self.find("confirm-title").text, expected_title)
        dialog.find_element(By.ID, "confirm-ok").click()

    def until(self, condition, what, name=None):
        """Waits for `condition`; on a timeout the page's problem line and the row say why."""
        try:
            self.wait.until(condition)
        except Exception:
            self.shot(f"{self.id().split('.')[-1]}-failed")
            problem = self.browser.find_elements(By.ID, "problem")
            rows = self.browser.find_elements(By.CSS_SELECTOR, f'tr[data-machine="{name or self.machine}"]')
            self.fail(f"{what}; the page says: {problem[0].text if problem else ''!r}; "
                      f"the row: {rows[0].text if rows else None!r}")

    def shot(self, name):
        if SHOTS:
            self.browser.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def open_details(self, name=None):
        self.click("details", name)
        self.until(lambda _: self.find("details-title").text == (name or self.machine), "the details open")

    def start_machine(self):
        self.click("start")
        self.until(lambda _: "running" in self.row().text, "the page shows the machine running after Start")

    def test_root_starts_and_stops_a_machine_as_machinectl_sees_it(self):
        self.log_in("root")
        self.row()
        self.assertEqual(machine_state(self.machine), "stopped")
        self.start_machine()
        self.assertEqual(machine_state(self.machine), "running", "machinectl agrees with the page")
        # The stats sampler fills CPU and memory from two samples, 3 s apart.
        self.until(lambda _: "%" in self.row().find_element(By.CSS_SELECTOR, "td.cpu").text, "live CPU use shows")
        # Memory as nspawnd samples it: a cgroup v1 host (this testbed's) has no memory.current.
        sample = json.loads(testbed("curl", "-s", "--unix-socket", "/run/nspawnd/nspawnd.sock",
                                    f"http://localhost/v1/stats?name={self.machine}").stdout)[0]
        memory = self.row().find_element(By.CSS_SELECTOR, "td.memory").text
        if "memory_bytes" in sample:
            self.assertRegex(memory, r"^[0-9.]+ (B|KiB|MiB|GiB)$")
        else:
            self.assertEqual(memory, "")
        self.shot("machines")
        # Stop asks first; Cancel leaves it running.
        stops = requests_to("stop")
        self.click("stop")
        self.wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        self.browser.find_element(By.CSS_SELECTOR, '#confirm button[value="cancel"]').click()
        time.sleep(2)
        self.assertEqual(requests_to("stop"), stops, "a cancelled confirmation sends no stop")
        self.assertEqual(machine_state(self.machine), "running")
        self.click("stop")
        self.confirm(f"Stop {self.machine}?")
        self.until(lambda _: "stopped" in self.row().text, "the page shows the machine stopped after Stop")
        self.assertEqual(machine_state(self.machine), "stopped")

    def test_the_list_follows_machinectl(self):
        self.log_in("root")
        self.row()
        testbed("machinectl", "start", self.machine)
        # No click: the page hears nspawnd's events.
        self.until(lambda _: "running" in self.row().text, "a start by machinectl shows without a click")
        # terminate: a sleep as PID 1 ignores the shutdown signal a stop sends.
        testbed("machinectl", "terminate", self.machine)
        self.until(lambda _: "stopped" in self.row().text, "a terminate by machinectl shows without a click")

    def test_an_nspawn_member_reads_and_runs_but_changes_nothing(self):
        self.log_in("nspawnop")
        self.assertIn("group nspawn", self.find("who").text)
        self.row()
        for admin_only in ("create-open", "import-open", "settings-form"):
            self.assertFalse(self.find(admin_only).is_displayed(), f"#{admin_only} is hidden from a member")
        self.start_machine()
        self.assertEqual(machine_state(self.machine), "running", "a member's start reached machined")
        self.open_details()
        for admin_only in ("settings-form", "resize-form", "expose-form", "terminal-open"):
            self.assertFalse(self.find(admin_only).is_displayed(), f"#{admin_only} is hidden from a member in the details")
        self.assertFalse(self.find("terminal-open").is_displayed(), "no terminal for a member: exec is root's")
        actions = self.browser.execute_script(
            "return [...document.querySelectorAll('#details-actions button')].map(b => b.dataset.action)")
        self.assertIn("terminate", actions)
        self.assertNotIn("remove", actions)
        self.until(lambda _: self.find("settings-view").text, "a member reads the settings")
        self.shot("member")
        # A hard reboot is a power reset: machined sees a new leader.
        leader = testbed("machinectl", "show", self.machine, "-p", "Leader", "--value").stdout.strip()
        self.click("hard-reboot", within="#details-actions")
        self.confirm(f"Hard reboot {self.machine}?")
        self.until(lambda _: testbed("machinectl", "show", self.machine, "-p", "Leader", "--value").stdout.strip() not in ("", leader),
                   "a member's hard reboot gives the machine a new leader")
        self.until(lambda _: "running" in self.row().text, "running again after the hard reboot")
        self.click("terminate", within="#details-actions")
        self.confirm(f"Terminate {self.machine}?")
        self.until(lambda _: "stopped" in self.row().text, "a member's terminate shows")

    def test_a_user_outside_the_group_is_refused_in_the_words_of_nspawnctl_api(self):
        self.log_in("nspawnout")
        # The socket (0660, group nspawn) refuses the bridge before nspawnd sees a request: the
        # page says what `nspawnctl --api` says to the same user.
        cli = testbed("su", "nspawnout", "-s", "/bin/sh", "-c", "/usr/local/bin/nspawnctl --api ls")
        self.assertEqual(cli.returncode, 4, cli.stderr)
        self.until(lambda _: self.find("problem").is_displayed(), "the refusal shows")
        self.assertEqual("nspawnctl: " + self.find("problem").text, cli.stderr.strip())
        self.assertFalse(self.browser.find_elements(By.CSS_SELECTOR, "#machines tbody tr"), "no machines shown")
        self.shot("refused")

    def test_root_creates_a_machine_from_an_image_with_a_flavor_and_removes_it(self):
        name = "e2e-web-small"
        self.log_in("root")
        self.row()
        self.find("create-open").click()
        self.find("create-name").send_keys(name)
        Select(self.find("create-image")).select_by_value(self.machine)
        Select(self.find("create-flavor")).select_by_value("small")
        self.shot("create")
        self.browser.find_element(By.CSS_SELECTOR, '#create button[value="ok"]').click()
        self.until(lambda _: "small" in self.row(name).find_element(By.CSS_SELECTOR, "td.flavor").text,
                   "the new machine shows with its flavor", name)
        config = json.loads(nspawnctl("config", name, "--json").stdout)
        self.assertEqual(config.get("flavor"), "small", "nspawnctl config agrees")
        self.assertEqual(testbed("machinectl", "image-status", name).returncode, 0, "machined has the image")
        self.open_details(name)
        self.click("remove", name, within="#details-actions")
        self.confirm(f"Remove {name}?")
        self.until(lambda _: not self.browser.find_elements(By.CSS_SELECTOR, f'tr[data-machine="{name}"]'),
                   "the removed machine leaves the list", name)
        self.assertNotEqual(testbed("machinectl", "image-status", name).returncode, 0, "machined has no such image")

    def test_root_imports_from_a_url_to_100_percent_and_cancels_a_stalled_one(self):
        self.log_in("root")
        self.row()
        self.find("import-open").click()
        self.find("import-url").send_keys("http://127.0.0.1:18389/web.tar.gz")
        self.find("import-name").send_keys("e2e-imported")
        self.browser.find_element(By.CSS_SELECTOR, '#import button[value="ok"]').click()
        item = '#operation-list li[data-state="succeeded"]'
        self.until(lambda _: self.browser.find_elements(By.CSS_SELECTOR, item), "the import succeeds", "e2e-imported")
        shown = self.browser.find_element(By.CSS_SELECTOR, item)
        self.assertIn("(100 %)", shown.text)
        self.assertEqual(shown.find_element(By.TAG_NAME, "progress").get_attribute("value"), "100")
        self.row("e2e-imported")
        self.shot("import")
        self.assertEqual(testbed("machinectl", "image-status", "e2e-imported").returncode, 0)
        self.addCleanup(nspawnctl, "remove", "e2e-imported")
        shown.find_element(By.CSS_SELECTOR, 'button[data-action="dismiss-import"]').click()
        self.until(lambda _: not self.browser.find_elements(By.CSS_SELECTOR, "#operation-list li"), "dismissed")

        # A source that stalls after 2000 bytes: once bytes have arrived, Cancel ends the import,
        # the page shows it cancelled, and nothing of it stays.
        self.find("import-open").click()
        for field, value in (("import-url", "http://127.0.0.1:18399/stalled.tar.gz"), ("import-name", "e2e-stalled")):
            self.find(field).clear()
            self.find(field).send_keys(value)
        self.browser.find_element(By.CSS_SELECTOR, '#import button[value="ok"]').click()
        running = '#operation-list li[data-state="running"]'
        self.until(lambda b: re.search(r"\((\d+(\.\d)?) (B|KiB)\)", b.find_element(By.CSS_SELECTOR, running).text)
                   and "(0 B)" not in b.find_element(By.CSS_SELECTOR, running).text, "the stalled import has read bytes")
        self.until(lambda b: b.find_element(By.CSS_SELECTOR, f'{running} button[data-action="cancel-import"]').click() or True,
                   "Cancel can be clicked")
        self.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#operation-list li[data-state="cancelled"]'), "the import shows cancelled")
        self.assertNotEqual(testbed("machinectl", "image-status", "e2e-stalled").returncode, 0)
        left = testbed("sh", "-c", "ls -a /var/lib/machines | grep -c stalled || true").stdout.strip()
        self.assertEqual(left, "0", "nothing of the cancelled import stays in /var/lib/machines")
        self.browser.find_element(By.CSS_SELECTOR, '#operation-list button[data-action="dismiss-import"]').click()
        self.until(lambda _: not self.browser.find_elements(By.CSS_SELECTOR, "#operation-list li"), "dismissed")

    def test_root_changes_a_setting_and_a_bad_one_shows_the_same_message_as_config(self):
        self.log_in("root")
        self.open_details()
        self.find("settings-set").send_keys("Hostname=cockpit-web")
        self.browser.find_element(By.CSS_SELECTOR, '#settings-form button[type="submit"]').click()
        self.until(lambda _: "cockpit-web" in self.find("settings-view").text, "the new setting shows")
        written = testbed("cat", f"/etc/systemd/nspawn/{self.machine}.nspawn").stdout
        self.assertIn("Hostname=cockpit-web", written.splitlines())
        self.shot("details")
        cli = nspawnctl("config", self.machine, "--set", "Bogus=1")
        self.assertNotEqual(cli.returncode, 0)
        self.find("settings-set").send_keys("Bogus=1")
        self.browser.find_element(By.CSS_SELECTOR, '#settings-form button[type="submit"]').click()
        self.until(lambda _: self.find("problem").is_displayed(), "the refusal shows")
        self.assertIn(self.find("problem").text, cli.stderr, "the page shows config's own message")
        self.assertEqual(testbed("cat", f"/etc/systemd/nspawn/{self.machine}.nspawn").stdout, written, "nothing written")

    def test_the_terminal_runs_a_shell_in_the_machine(self):
        self.log_in("root")
        self.start_machine()
        self.open_details()
        self.find("terminal-open").click()
        screen = self.find("terminal")
        self.until(lambda _: "#" in screen.text, "the shell prompts")
        ActionChains(self.browser).click(screen).send_keys("echo $((6*7))" + Keys.ENTER).perform()
        self.until(lambda _: "42" in screen.text.splitlines(), "the shell answers 42")
        self.shot("terminal")
        ActionChains(self.browser).click(screen).send_keys("exit" + Keys.ENTER).perform()
        self.until(lambda _: "exited with status 0" in screen.text, "the shell's exit shows")

    def test_root_resizes_with_a_flavor_and_reverts_and_an_exposure_is_refused_in_nspawnds_words(self):
        self.log_in("root")
        self.open_details()
        self.until(lambda _: self.browser.find_elements(By.CSS_SELECTOR, '#resize-flavor option[value="tiny"]'), "flavors load")
        Select(self.find("resize-flavor")).select_by_value("tiny")
        self.browser.find_element(By.CSS_SELECTOR, '#resize-form button[type="submit"]').click()
        flavor_cell = lambda: self.row().find_element(By.CSS_SELECTOR, "td.flavor").text
        self.until(lambda _: flavor_cell() == "tiny (resize pending)", "the pending resize shows")
        status = json.loads(nspawnctl("status", self.machine, "--json").stdout)
        self.assertEqual(status.get("pending_resize", {}).get("to"), "tiny", "nspawnctl status agrees")
        self.until(lambda _: self.find("resize-revert").is_displayed(), "Revert is offered")
        self.shot("resize")
        self.find("resize-revert").click()
        self.until(lambda _: flavor_cell() == "", "the revert leaves no flavor")
        status = json.loads(nspawnctl("status", self.machine, "--json").stdout)
        self.assertNotIn("pending_resize", status)
        self.assertNotIn("flavor", status)

        # Exposure needs a guest systemd to take the sockets: for this Boot=no machine the page
        # shows nspawnd's refusal, the one `nspawnctl expose` gives, and nothing listens.
        self.find("expose-listen").send_keys("127.0.0.1:18080")
        self.find("expose-unit").send_keys("web.service")
        self.browser.find_element(By.CSS_SELECTOR, '#expose-form button[type="submit"]').click()
        self.until(lambda _: self.find("problem").is_displayed(), "the refusal shows")
        cli = nspawnctl("expose", self.machine, "--listen", "127.0.0.1:18080", "--unit", "web.service")
        self.assertNotEqual(cli.returncode, 0)
        self.assertIn(self.find("problem").text, cli.stderr)
        self.assertIn("does not boot", self.find("problem").text)
        self.assertEqual(testbed("ss", "-Hltn", "sport = :18080").stdout.strip(), "", "nothing listens")
        self.assertEqual(self.row().find_element(By.CSS_SELECTOR, "td.exposed").text, "")

    def test_root_exposes_a_booting_machine_that_starts_on_the_first_connection_and_unexposes_it(self):
        name = "e2e-boot"
        self.addCleanup(testbed, "machinectl", "terminate", name)
        self.log_in("root")
        self.open_details(name)
        self.find("expose-listen").send_keys("127.0.0.1:18081")
        self.find("expose-exec").send_keys("/bin/echo hello from the page")
        self.browser.find_element(By.CSS_SELECTOR, '#expose-form button[type="submit"]').click()
        exposed = lambda: self.row(name).find_element(By.CSS_SELECTOR, "td.exposed").text
        self.until(lambda _: exposed() == "127.0.0.1:18081" and "listening" in self.row(name).text,
                   "the exposure shows, listening", name)
        socket = f"systemd-nspawn@{name}.socket"
        self.assertEqual(testbed("systemctl", "show", "-p", "Listen", "--value", socket).stdout.strip(), "127.0.0.1:18081 (Stream)")
        self.assertEqual(machine_state(name), "stopped", "nothing runs before the first connection")
        answer = testbed("sh", "-c", "timeout 120 busybox nc 127.0.0.1 18081 </dev/null")
        self.assertEqual(answer.stdout.strip(), "hello from the page", answer.stderr)
        self.until(lambda _: "running" in self.row(name).text, "the page shows the machine the connection started", name)
        self.shot("exposed")
        # The running machine holds the socket: unexposing it now is refused, in nspawnd's words.
        self.until(lambda _: self.find("unexpose").is_enabled(), "Unexpose is offered", name)
        self.find("unexpose").click()
        self.until(lambda _: self.find("problem").is_displayed(), "the refusal shows", name)
        self.assertIn(name, self.find("problem").text)
        self.assertEqual(testbed("systemctl", "is-active", socket).stdout.strip(), "active", "the refusal changed nothing")
        self.click("terminate", name, within="#details-actions")
        self.confirm(f"Terminate {name}?")
        self.until(lambda _: "listening" in self.row(name).text, "terminated, it listens again", name)
        self.find("unexpose").click()
        self.until(lambda _: exposed() == "" and "stopped" in self.row(name).text, "the exposure goes", name)
        self.assertNotEqual(testbed("systemctl", "is-active", socket).stdout.strip(), "active")
        self.assertEqual(testbed("ss", "-Hltn", "sport = :18081").stdout.strip(), "", "nothing listens any more")

    def test_the_keyboard_alone_starts_and_stops_and_every_control_has_a_name(self):
        self.log_in("root")
        self.row()
        unnamed = self.browser.execute_script("""
            const bad = [];
            for (const c of document.querySelectorAll("input, select, textarea"))
                if (!c.labels || !c.labels.length) bad.push(c.id || c.outerHTML);
            for (const b of document.querySelectorAll("button"))
                if (!(b.getAttribute("aria-label") || b.textContent).trim()) bad.push(b.outerHTML);
            return bad;""")
        self.assertEqual(unnamed, [], "controls without a label or name")

        def tab_to(selector, limit=60):
            for _ in range(limit):
                ActionChains(self.browser).send_keys(Keys.TAB).perform()
                if self.browser.execute_script("return document.activeElement.matches(arguments[0])", selector):
                    return
            self.fail(f"Tab never reached {selector}")

        self.browser.find_element(By.TAG_NAME, "h1").click()
        tab_to(f'button[data-action="start"][data-machine="{self.machine}"]')
        ActionChains(self.browser).send_keys(Keys.ENTER).perform()
        self.until(lambda _: "running" in self.row().text, "Enter on Start starts the machine")
        self.assertEqual(machine_state(self.machine), "running")
        # Focus stays on the row across redraws; Stop asks, with Cancel focused, so Enter alone does nothing.
        stop = f'#machines button[data-action="stop"][data-machine="{self.machine}"]'
        tab_to(stop)
        ActionChains(self.browser).send_keys(Keys.ENTER).perform()
        self.wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        ActionChains(self.browser).send_keys(Keys.ESCAPE).perform()
        self.until(lambda _: not self.find("confirm").is_displayed(), "Escape closes the question")
        # Focus is back on Stop, and stays there across the stats sampler's redraws (every 3 s).
        focused = "return document.activeElement.matches(arguments[0])"
        self.until(lambda b: b.execute_script(focused, stop), "focus returns to Stop")
        time.sleep(3.5)
        self.assertTrue(self.browser.execute_script(focused, stop), "focus survives a redraw")
        self.assertEqual(machine_state(self.machine), "running", "Escape cancelled the stop")
        ActionChains(self.browser).send_keys(Keys.ENTER).perform()
        self.wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
        ActionChains(self.browser).send_keys(Keys.TAB, Keys.ENTER).perform()
        self.until(lambda _: "stopped" in self.row().text, "Tab and Enter confirm the stop")
        self.assertEqual(machine_state(self.machine), "stopped")


if __name__ == "__main__":
    unittest.main()
