"""The Cockpit page in a real browser: headless Chromium, driven by Selenium, logs in to the
testbed's cockpit-ws and works the page; machinectl in the testbed says what happened.

scripts/cockpit-test sets up the testbed (cockpit-ws on its loopback, a bridge to it on the
host's 127.0.0.1) and passes its address and accounts in the environment."""

import os
import subprocess
import unittest

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["NSPAWNCTL_COCKPIT_URL"]
TESTBED = os.environ["NSPAWNCTL_TESTBED"]
REPO = os.environ["NSPAWNCTL_REPO"]
SHOTS = os.environ.get("NSPAWNCTL_SCREENSHOTS", "")
PASSWORD = os.environ["NSPAWNCTL_COCKPIT_PASSWORD"]


def testbed(*command):
    return subprocess.run([f"{REPO}/scripts/testbed", "exec", "--name", TESTBED, "--", *command],
                          capture_output=True, text=True, check=False)


def machine_state(name):
    shown = testbed("machinectl", "show", name, "-p", "State", "--value")
    return shown.stdout.strip() if shown.returncode == 0 else "stopped"


class CockpitPage(unittest.TestCase):
    machine = "e2e-web"

    @classmethod
    def setUpClass(cls):
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
            options.add_argument(flag)
        options.binary_location = "/usr/bin/chromium"
        service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
        cls.browser = webdriver.Chrome(options=options, service=service)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()

    def setUp(self):
        self.wait = WebDriverWait(self.browser, 30)

    def log_in(self, user):
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

    def row(self):
        return self.wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, f'tr[data-machine="{self.machine}"]')))

    def until(self, condition, what):
        """Waits for `condition`; on a timeout the page's state and its problem line say why."""
        try:
            self.wait.until(condition)
        except Exception:
            self.shot(f"{self.id().split('.')[-1]}-failed")
            problem = self.browser.find_elements(By.ID, "problem")
            self.fail(f"{what}; the page says: {problem[0].text if problem else ''!r}; the row: {self.row().text!r}")

    def shot(self, name):
        if SHOTS:
            self.browser.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def test_root_starts_and_stops_a_machine_as_machinectl_sees_it(self):
        self.log_in("root")
        self.row()
        self.assertEqual(machine_state(self.machine), "stopped")
        self.browser.find_element(By.CSS_SELECTOR, f'button[data-action="start"][data-machine="{self.machine}"]').click()
        self.until(lambda _: "running" in self.row().text, "the page shows the machine running after Start")
        self.assertEqual(machine_state(self.machine), "running", "machinectl agrees with the page")
        self.shot("machines")
        self.browser.find_element(By.CSS_SELECTOR, f'button[data-action="stop"][data-machine="{self.machine}"]').click()
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


if __name__ == "__main__":
    unittest.main()
