"""moto's AWS emulator on 127.0.0.1, for the tests, with one addition.

    python tests/moto_ec2.py PORT

serves moto's AWS API on 127.0.0.1:PORT, as `moto_server` does, and prints
"ready". moto moves an instance from stopped to running at once, but a real
one passes through pending, stopping and shutting-down, and ec2 must handle
those too. So a line "INSTANCE-ID STATE" on stdin puts that instance of
us-east-1 in STATE, and "INSTANCE-ID launched SECONDS" dates its launch
SECONDS ago, "INSTANCE-ID root instance-store" gives it that root device
type, and "INSTANCE-ID public-ip ADDRESS" that public address (a test's own
sandbox, as a stop and start would give it another), and "INSTANCE-ID boot
SECONDS" makes its next starts take time, as a real one's do: it is pending
for SECONDS after start-instances, then running, keeping its public address
(a benchmark's own sandbox), and "INSTANCE-ID self-stopped MINUTES" stops it
as a shutdown from inside does, MINUTES ago ("-": at a time EC2 does not
give): its StateReason is Client.InstanceInitiatedShutdown, which moto never
writes; the answer is "ok", or
"error: ..." on one line. moto has no SSM instance information and no EC2
Instance Connect Endpoints: here ssm describe-instance-information answers
that the instances of "INSTANCE-ID ssm-online" lines are online, and ec2
describe-instance-connect-endpoints that each VPC of a "VPC-ID endpoint"
line has a ready endpoint, eice-0 and its VPC's id. moto takes
EC2 Instance Connect's send-ssh-public-key and forgets it: here each one is
kept, and a line "keys" answers with them all, [[instance id, user, key],
...], as one JSON line. The server stops when stdin closes.
"""

import json
import sys
from datetime import datetime, timedelta, timezone

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import InstanceBackend, StateReason
from moto.ec2.responses import EC2Response
from moto.ec2instanceconnect.responses import Ec2InstanceConnectResponse
from moto.server import ThreadedMotoServer
from moto.ssm.responses import SimpleSystemManagerResponse

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}


SENT_KEYS = []


def send_ssh_public_key(self):
    body = json.loads(self.body)
    SENT_KEYS.append([body["InstanceId"], body["InstanceOSUser"], body["SSHPublicKey"]])
    return json.dumps({"RequestId": f"request-{len(SENT_KEYS)}", "Success": True})


Ec2InstanceConnectResponse.send_ssh_public_key = send_ssh_public_key
ONLINE, ENDPOINT_VPCS = set(), set()


def describe_instance_information(self):
    return ActionResult({"InstanceInformationList": [{"InstanceId": i, "PingStatus": "Online"}
                                                     for i in sorted(ONLINE)]})


def describe_instance_connect_endpoints(self):
    return ActionResult({"InstanceConnectEndpoints": [
        {"InstanceConnectEndpointId": f"eice-0{vpc[4:]}", "State": "create-complete", "VpcId": vpc}
        for vpc in sorted(ENDPOINT_VPCS)]})


SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
EC2Response.describe_instance_connect_endpoints = describe_instance_connect_endpoints


BOOT_SECONDS, PUBLIC_IPS = {}, {}


def start_instances(self, *args, **kwargs):
    """moto's start, then for an instance of a "boot" line: pending until its boot is over."""
    import threading

    started = REAL_START(self, *args, **kwargs)
    for instance in list(started):
        instance = instance[0] if isinstance(instance, tuple) else instance
        if instance.id in PUBLIC_IPS:  # a sandbox's, not one moto makes up at a start
            instance.nics[0].public_ip = PUBLIC_IPS[instance.id]
        seconds = BOOT_SECONDS.get(instance.id)
        if seconds is not None:
            instance._state.name, instance._state.code = "pending", STATE_CODES["pending"]

            def booted(instance=instance):
                instance._state.name, instance._state.code = "running", STATE_CODES["running"]
                if instance.id in PUBLIC_IPS:  # the sandbox's, not one moto makes up at a start
                    instance.nics[0].public_ip = PUBLIC_IPS[instance.id]

            timer = threading.Timer(seconds, booted)
            timer.daemon = True
            timer.start()
    return started


REAL_START = InstanceBackend.start_instances
InstanceBackend.start_instances = start_instances


def set_state(instance_id, state, seconds=None):
    if state in ("ssm-online", "endpoint"):
        (ONLINE if state == "ssm-online" else ENDPOINT_VPCS).add(instance_id)
        return
    instance = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_instance(instance_id)
    if state == "launched":
        instance.launch_time = datetime.now(timezone.utc) - timedelta(seconds=int(seconds))
        return
    if state == "root":  # "INSTANCE-ID root instance-store": a root device moto never makes
        instance.root_device_type = seconds
        return
    if state == "public-ip":  # "INSTANCE-ID public-ip ADDRESS"
        instance.nics[0].public_ip = PUBLIC_IPS[instance_id] = seconds
        return
    if state == "self-stopped":  # "INSTANCE-ID self-stopped MINUTES", or "-"
        instance.stop()
        when = "" if seconds == "-" else " (" + (datetime.now(timezone.utc) - timedelta(
            minutes=float(seconds))).strftime("%Y-%m-%d %H:%M:%S") + " GMT)"
        instance._reason = f"User initiated{when}"
        instance.state_reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                                            "Client.InstanceInitiatedShutdown")
        return
    if state == "boot":  # "INSTANCE-ID boot SECONDS"
        BOOT_SECONDS[instance_id] = float(seconds)
        return
    instance._state.name = state
    instance._state.code = STATE_CODES[state]


def main():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "keys":
            print(json.dumps(SENT_KEYS), flush=True)
            continue
        try:
            set_state(*line.split())
            print("ok", flush=True)
        except Exception as e:  # the test reads the reason
            print(f"error: {e!r}", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
