import Testing
@testable import NspawnKit

@Suite struct RestartPolicyTests {
    @Test func dropInsReadBackAsTheyWereWritten() throws {
        let policies = [
            RestartPolicy(mode: .onFailure),
            RestartPolicy(mode: .always, delaySeconds: 5),
            RestartPolicy(mode: .onFailure, delaySeconds: 0.25, startLimit: try .init(parsing: "3/1min")),
            RestartPolicy(mode: .no, startLimit: try .init(parsing: "10/90")),
        ]
        for policy in policies {
            #expect(RestartPolicy(dropIn: policy.dropIn()) == policy, "\(policy.dropIn())")
        }
        let text = RestartPolicy(mode: .onFailure, delaySeconds: 2, startLimit: try .init(parsing: "3/60s")).dropIn()
        #expect(text.contains("[Service]\nRestart=on-failure\nRestartSec=2s\n"))
        #expect(text.contains("[Unit]\nStartLimitIntervalSec=60s\nStartLimitBurst=3\n"))
        #expect(RestartPolicy(dropIn: "[Service]\nRestart=always\n") == nil, "not ours")
        #expect(RestartPolicy(mode: .no).isDefault && !RestartPolicy(mode: .no, delaySeconds: 1).isDefault)
    }

    @Test func badValuesAreRefusedWithWhatWasExpected() {
        for mode in ["sometimes", "", "On-Failure", "on-abnormal"] {
            #expect(throws: NspawnError.self) { try RestartPolicy.mode(parsing: mode) }
        }
        for delay in ["-5", "5parsecs", "", "2d", "+1s"] {
            #expect(throws: NspawnError.self) { try RestartPolicy.delay(parsing: delay) }
        }
        for limit in ["0/10s", "3", "3/", "/10s", "3/0", "3/8d", "20000/1min", "3/10s/1", "x/10s"] {
            #expect(throws: NspawnError.self) { try RestartPolicy.StartLimit(parsing: limit) }
        }
        #expect(throws: NspawnError.self) { try RestartChange(delaySeconds: 5).applied(to: nil, machine: "web") }
    }

    @Test func aChangeKeepsWhatItDoesNotSay() throws {
        let current = RestartPolicy(mode: .onFailure, delaySeconds: 5, startLimit: try .init(parsing: "3/1min"))
        #expect(try RestartChange(mode: .always).applied(to: current, machine: "web") == RestartPolicy(mode: .always, delaySeconds: 5, startLimit: current.startLimit))
        #expect(try RestartChange(delaySeconds: 1).applied(to: current, machine: "web").delaySeconds == 1)
        #expect(try RestartChange(mode: .no).applied(to: current, machine: "web").isDefault, "no alone drops the policy")
    }
}
