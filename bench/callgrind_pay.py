#!/usr/bin/env python3
"""Instructions per payInvoice, counted by callgrind: a figure that does not depend on what else
the machine does, so two builds can be compared on a machine whose speed moves between runs.

    python3 bench/callgrind_pay.py SETTLE_BIN LABEL [distinct|hot] [N] [CONCURRENCY]

Starts SETTLE_BIN under `valgrind --tool=callgrind` with counting off, creates a client, a
location and invoices (one per concurrent client for `distinct`, a single one for `hot`), warms
up with 2 x CONCURRENCY payments, then counts N payInvoice sent CONCURRENCY at a time over HTTP
and prints the instructions per payInvoice. The dump of that window is WORK/cg.out.1 (WORK is
$CALLGRIND_WORK or /tmp/settle-callgrind, then LABEL-MODE): read it with
`callgrind_annotate --inclusive=yes`. The file written when the server exits holds a wrong
summary; only the explicit dump counts. EXTRA_ENV="NAME=value ..." passes settings to the server.
"""
import json, os, subprocess, sys, time, uuid, urllib.request, re, shutil, glob
from concurrent.futures import ThreadPoolExecutor
binary, label = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "distinct"
n = int(sys.argv[4]) if len(sys.argv) > 4 else 200
conc = int(sys.argv[5]) if len(sys.argv) > 5 else 16
work = os.path.join(os.environ.get("CALLGRIND_WORK", "/tmp/settle-callgrind"), f"{label}-{mode}")
shutil.rmtree(work, ignore_errors=True); os.makedirs(work)
env = dict(os.environ, **{k: v for k, v in [a.split("=", 1) for a in os.environ.get("EXTRA_ENV", "").split() if a]})
server = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/cg.out",
                           binary, "serve", "--listen", "127.0.0.1:0", "--log", "error", "--data-dir", work + "/data"],
                          stdout=subprocess.PIPE, stderr=open(work + "/stderr", "w"), env=env, text=True)
url = None
for line in server.stdout:
    if line.startswith("Settle is listening on "):
        url = line.split("on ", 1)[1].strip(); break
token = subprocess.check_output([binary, "token", "--tenant", "bench", "--role", "ADMIN", "--data-dir", work + "/data"], text=True).strip()
def call(query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url + "/graphql", body, {"content-type": "application/json", "authorization": "Bearer " + token})
    out = json.load(urllib.request.urlopen(req, timeout=600))
    if out.get("errors"): raise RuntimeError(out["errors"])
    return out["data"]
client = call('mutation { createClient(input: {name: "C"}) { id } }')["createClient"]["id"]
location = call('mutation { createLocation(input: {name: "L"}) { id } }')["createLocation"]["id"]
cash = [m for m in call("{ paymentMethods { id name } }")["paymentMethods"] if m["name"] == "Cash"][0]["id"]
def invoice():
    i = call('mutation($input: InvoiceInput!, $key: String!) { createInvoice(input: $input, idempotencyKey: $key) { invoice { id } } }',
             {"key": str(uuid.uuid4()), "input": {"clientId": client, "locationId": location, "lines": [{"description": "x", "unitPrice": "10000000.00"}]}})["createInvoice"]["invoice"]["id"]
    call('mutation($id: ID!, $key: String!) { finalizeInvoice(id: $id, idempotencyKey: $key) { invoice { id } } }', {"id": i, "key": str(uuid.uuid4())})
    return i
invoices = [invoice() for _ in range(conc if mode == "distinct" else 1)]
PAY = 'mutation($id: ID!, $m: ID!, $amount: Amount!, $key: String!) { payInvoice(id: $id, input: {methodId: $m, amount: $amount}, idempotencyKey: $key) { payment { id } } }'
def worker(w, count):
    for _ in range(count):
        call(PAY, {"id": invoices[w % len(invoices)], "m": cash, "amount": "1.00", "key": str(uuid.uuid4())})
def run(total):
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(lambda w: worker(w, total // conc), range(conc)))
run(conc * 2)  # warm up
subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True)
started = time.time(); run(n); elapsed = time.time() - started
subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], capture_output=True)
time.sleep(1)
server.terminate(); server.wait()
total = 0
for f in glob.glob(work + "/cg.out.1"):
    for line in open(f):
        if line.startswith("summary:") or line.startswith("totals:"):
            total = max(total, int(line.split()[1]))
            
print(f"{label} {mode}: {total/ n / 1e6:.2f} M instructions per payInvoice ({n} at {conc} at a time, {elapsed:.0f} s)")
