"""A real gRPC client against a running `qgpt serve`: stubs generated from proto/ by grpcio-tools.

Usage: grpc_client.py HOST:PORT STUBS_DIR

Streams a greedy generation and checks the final message, checks that the unary call returns the
same text, calls grpc.health.v1 (grpcio-health-checking) and lists the services through server
reflection (grpcio-reflection). Exits non-zero with a message on any mismatch.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


def main() -> int:
    addr, stubs = sys.argv[1], sys.argv[2]
    sys.path.insert(0, stubs)
    from qgpt.v1 import generation_pb2 as pb
    from qgpt.v1 import generation_pb2_grpc as rpc

    with grpc.insecure_channel(addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "qgpt.v1.TextGeneration"):
            r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, (service, r)

        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        names = [
            s.name
            for resp in refl.ServerReflectionInfo(iter([req]), timeout=10)
            for s in resp.list_services_response.service
        ]
        for want in ("qgpt.v1.TextGeneration", "grpc.health.v1.Health"):
            assert want in names, (want, names)

        gen = rpc.TextGenerationStub(ch)
        request = pb.GenerateRequest(prompt="Hello world", max_new_tokens=16, ignore_eos=True)
        msgs = list(gen.GenerateStream(request, timeout=60))
        last = msgs[-1]
        assert last.finish_reason == pb.FINISH_REASON_LENGTH, last
        assert last.usage.generated_tokens == 16, last.usage
        assert sum(len(m.tokens) for m in msgs) == 16
        streamed = "".join(m.text_delta for m in msgs)
        unary = gen.Generate(request, timeout=60)
        assert unary.text_delta == streamed, (unary.text_delta, streamed)

        try:
            gen.Generate(pb.GenerateRequest(prompt=""), timeout=10)
            raise AssertionError("an empty prompt was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert e.details().startswith("prompt"), e.details()

        info = gen.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.architecture == "gpt2" and info.vocab_size > 0, info

    print(f"python grpcio client: ok ({len(msgs)} streamed messages, {names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
