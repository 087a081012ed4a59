"""One party of SecretFlow SPU's two-party PSI, the peer of bench/psi_ot.py.

Runs in the SPU bench venv (`make bench-peers`: .venv/spu, `spu` pins numpy < 2 and jax, so it
cannot share pcn's venv), never imports pcn. Two processes, ranks 0 (the receiver) and 1, each
run this script; they talk over SPU's own brpc link on 127.0.0.1 (SPU owns its transport).

    .venv/spu/bin/python bench/spu_party.py --rank 0 --protocol RR22 --ports 41001,41002 \\
        --input bank.csv --output out0.csv --key customer_id [--keys-unique]

Prints one JSON line: the seconds `psi_execute` took in this process (link set up before the
clock), the process's peak RSS in MiB, and SPU's report (original and intersection counts).
The receiver's output CSV holds its rows of the intersection.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import spu.psi as psi
from spu.libspu import link


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rank", type=int, choices=(0, 1), required=True)
    ap.add_argument("--protocol", choices=("RR22", "KKRT", "ECDH"), required=True)
    ap.add_argument("--ports", required=True, help="two local ports, rank 0's then rank 1's")
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--keys-unique", action="store_true")
    args = ap.parse_args()

    desc = link.Desc()
    desc.id = "pcn-bench"
    desc.recv_timeout_ms = 3_600_000
    desc.http_max_payload_size = 64 * 1024 * 1024
    for rank, port in enumerate(args.ports.split(",")):
        desc.add_party(f"party{rank}", f"127.0.0.1:{port}")
    lctx = link.create_brpc(desc, args.rank)

    config = psi.PsiExecuteConfig(
        protocol_conf=psi.PsiProtocolConfig(
            protocol=psi.parse_protocol(f"PROTOCOL_{args.protocol}"), receiver_rank=0, broadcast_result=False
        ),
        input_params=psi.InputParams(path=args.input, selected_keys=[args.key], keys_unique=args.keys_unique),
        output_params=psi.OutputParams(path=args.output, disable_alignment=True),
    )
    lctx.barrier()  # both links up before the clock starts
    t0 = time.perf_counter()
    report = psi.psi_execute(config, lctx)
    seconds = time.perf_counter() - t0
    lctx.stop_link()
    print(
        json.dumps(
            {
                "rank": args.rank,
                "protocol": args.protocol,
                "seconds": seconds,
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "original_count": report.original_count,
                "intersection_count": report.intersection_count,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
