"""A stand-in `aws` for the tests of SSM and EICE: what moto does not do.

tests/conftest.py installs it first on PATH as `aws`. It appends its argv,
as one JSON line, to $EC2_TEST_AWS_LOG, and then:
  ssm start-session ... portNumber=P,
  ec2-instance-connect open-tunnel ... --remote-port P
      relay stdin and stdout to port P of $EC2_TEST_TUNNEL_HOST, as the two
      AWS services do to the instance (the host is a test's own sandbox);
      its first $EC2_TEST_SSM_REFUSALS runs (counted in the file
      $EC2_TEST_SSM_REFUSED) say TargetNotConnected instead, as the CLI does
      for a minute or more after a start;
  ssm describe-instance-information   print $EC2_TEST_SSM_ANSWER;
  ec2 describe-instance-connect-endpoints   print $EC2_TEST_EICE_ANSWER;
  --version   print $EC2_TEST_AWS_VERSION, when it is set (on stderr, as
              version 1 did, if $EC2_TEST_AWS_VERSION_ON_STDERR is set);
  ec2 describe-instances   print $EC2_TEST_DESCRIBE, when it is set;
  ec2-instance-connect send-ssh-public-key   print $EC2_TEST_SEND_KEY_ANSWER, when set;
  ec2 stop-instances   print $EC2_TEST_STOP_ANSWER, when set;
and hands anything else to the real AWS CLI (moto, in the tests), found when
conftest.py installed it; but a price request (pricing, or Spot price history)
with no endpoint of a test's own is refused as IAM would, never sent to AWS.
"""

import json
import os
import selectors
import socket
import sys


def relay(host, port):
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    selector.unregister(0)
                    sock.shutdown(socket.SHUT_WR)
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                os.write(1, data)


def refused(refusals):
    """Whether this run is one of the first REFUSALS, as $EC2_TEST_SSM_REFUSED counts them."""
    if not refusals:
        return False
    with open(os.environ["EC2_TEST_SSM_REFUSED"], "a+") as count:
        count.seek(0)
        if len(count.read()) >= refusals:
            return False
        count.write("x")
    return True


def after(args, option):
    return args[args.index(option) + 1]


def main():
    args = sys.argv[1:]
    with open(os.environ["EC2_TEST_AWS_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")
    command = [a for a in args if not a.startswith("-")][:2]
    canned = {("ssm", "describe-instance-information"): "EC2_TEST_SSM_ANSWER",
              ("ec2", "describe-instance-connect-endpoints"): "EC2_TEST_EICE_ANSWER",
              ("ec2", "describe-instances"): "EC2_TEST_DESCRIBE",
              ("ec2-instance-connect", "send-ssh-public-key"): "EC2_TEST_SEND_KEY_ANSWER",
              ("ec2", "stop-instances"): "EC2_TEST_STOP_ANSWER"}.get(tuple(command))
    if command == ["ssm", "start-session"]:
        if refused(int(os.environ.get("EC2_TEST_SSM_REFUSALS", "0"))):
            print(f"\nAn error occurred (TargetNotConnected) when calling the StartSession operation:"
                  f" {after(args, '--target')} is not connected.\n", file=sys.stderr)
            return 254
        return relay(os.environ["EC2_TEST_TUNNEL_HOST"], int(after(args, "--parameters").split("=")[1]))
    if command == ["ec2-instance-connect", "open-tunnel"]:
        return relay(os.environ["EC2_TEST_TUNNEL_HOST"], int(after(args, "--remote-port")))
    if args == ["--version"] and os.environ.get("EC2_TEST_AWS_VERSION"):
        print(os.environ["EC2_TEST_AWS_VERSION"],
              file=sys.stderr if os.environ.get("EC2_TEST_AWS_VERSION_ON_STDERR") else sys.stdout)
        return 0
    if canned and canned in os.environ:
        print(os.environ[canned])
        return 0
    if (command[:1] == ["pricing"] and not os.environ.get("AWS_ENDPOINT_URL_PRICING", os.environ.get(
            "AWS_ENDPOINT_URL")) or command == ["ec2", "describe-spot-price-history"]
            and not os.environ.get("AWS_ENDPOINT_URL")):
        print("\nAn error occurred (AccessDeniedException) when calling the GetProducts operation:"
              " aws_standin: no endpoint of the test's own\n", file=sys.stderr)
        return 254
    here = os.environ["EC2_TEST_AWS_HERE"]  # the directory of the `aws` that ran this
    os.environ["PATH"] = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d != here)
    real = os.environ["EC2_TEST_REAL_AWS"]  # by its path where it was found, as conftest installed this
    try:
        os.execvp(real, [real, *args])
    except OSError:
        print("aws_standin: no real AWS CLI on PATH", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
