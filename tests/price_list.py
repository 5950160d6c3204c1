"""A stand-in for the AWS Price List API on 127.0.0.1: what moto does not do.

It speaks the API's own protocol (JSON 1.1, X-Amz-Target
AWSPriceListService.GetProducts, as botocore's service model for "pricing"
says), so the real AWS CLI reaches it through AWS_ENDPOINT_URL_PRICING. It
answers each GetProducts with the products of its table whose attributes
match every TERM_MATCH filter, as the API does: the table holds the one
answer kept as test data (tests/price_g5.xlarge.json, a g5.xlarge on Linux
in us-east-1). MODE makes it refuse ("denied", AccessDeniedException, as IAM
does without pricing:GetProducts), answer another shape ("garbage") or
answer each product twice ("several"). It records each request's filters.
"""

import http.server
import json
import threading
from pathlib import Path

ANSWER = Path(__file__).with_name("price_g5.xlarge.json")


class PriceList:
    def __init__(self, mode="answer"):
        self.mode, self.requests = mode, []
        self.products = json.loads(ANSWER.read_text())["PriceList"]
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                filters = {f["Field"]: f["Value"] for f in body.get("Filters", [])}
                stand_in.requests.append({"target": self.headers.get("X-Amz-Target"), "filters": filters,
                                          "service": body.get("ServiceCode")})
                status, answer = stand_in.answer(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.env = {"AWS_ENDPOINT_URL_PRICING": f"http://127.0.0.1:{self.server.server_port}"}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, body):
        if self.mode == "denied":
            return 400, {"__type": "AccessDeniedException",
                         "Message": "User: arn:aws:iam::123456789012:user/test is not authorized to perform:"
                                    " pricing:GetProducts because no identity-based policy allows the"
                                    " pricing:GetProducts action"}
        if self.mode == "garbage":
            return 200, {"FormatVersion": "aws_v1", "PriceList": ["<html>a proxy's login page</html>"]}
        terms = {f["Field"]: f["Value"] for f in body.get("Filters", []) if f.get("Type") == "TERM_MATCH"}
        matching = [p for p in self.products if body.get("ServiceCode") == "AmazonEC2" and all(
            json.loads(p)["product"]["attributes"].get(field) == value for field, value in terms.items())]
        return 200, {"FormatVersion": "aws_v1", "PriceList": matching * (2 if self.mode == "several" else 1)}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
