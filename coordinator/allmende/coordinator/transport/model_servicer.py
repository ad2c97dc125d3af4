"""The ModelService: served models in and out (domain/models.py does the work).

AddModel needs the admin token, ListModels is a researcher call, GetModelManifest and
DownloadModelFile are open: a volunteer fetches a model before it holds any token, and it
trusts the manifest's signature and every file's hash, not the channel (allmende.proto).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from allmende.coordinator.domain.coordinator import Coordinator
from allmende.coordinator.domain.models import ModelUpload
from allmende.coordinator.metrics import Metrics
from allmende.coordinator.transport.errors import streaming, unary
from allmende.coordinator.transport.servicers import DOWNLOAD_CHUNK, check_admin, check_reader
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.model_manifest import ModelManifest
from allmende.protocol.models import ModelFile
from allmende.v1 import allmende_pb2 as pb
from allmende.v1 import allmende_pb2_grpc as rpc


def model_info_pb(m: ModelManifest) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=m.name,
        pin=m.pin,
        task_kinds=list(m.task_kinds),
        files=len(m.files),
        bytes=m.total_bytes,
        created_unix_ms=m.created_ms,
        dims=m.dims,
    )


def _upload(header: pb.AddModelHeader) -> ModelUpload:
    return ModelUpload(
        name=header.name,
        task_kinds=tuple(header.task_kinds),
        files=tuple(ModelFile(f.path, f.bytes, f.sha256) for f in header.files),
        dims=header.dims,
        max_seq_length=header.max_seq_length,
        weights_file=header.weights_file,
        labels=tuple(header.labels),
    )


def _chunks(messages: Iterator[pb.AddModelRequest]) -> Iterator[tuple[str, bytes]]:
    for message in messages:
        if message.HasField("header"):
            raise InvalidArgument("header", "exactly one header, in the first message")
        yield message.chunk.path, message.chunk.data


class ModelServicer(rpc.ModelServiceServicer):
    def __init__(
        self,
        coordinator: Coordinator,
        admin_token: str,
        metrics: Metrics | None = None,
        readers: tuple[str, ...] = (),
    ) -> None:
        self.c = coordinator
        self.admin_token = admin_token
        self.metrics = metrics
        self.readers = readers

    @unary
    def AddModel(
        self, request_iterator: Iterator[pb.AddModelRequest], context: grpc.ServicerContext
    ) -> pb.AddModelResponse:
        check_admin(context, self.admin_token)
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("header", "the model's header (name, kinds, files) first")
        manifest = self.c.models.add(_upload(first.header), _chunks(request_iterator))
        return pb.AddModelResponse(model=model_info_pb(manifest))

    @unary
    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        check_reader(context, self.readers)
        return pb.ListModelsResponse(models=[model_info_pb(m) for m in self.c.models.list()])

    @unary
    def GetModelManifest(
        self, request: pb.GetModelManifestRequest, context: grpc.ServicerContext
    ) -> pb.GetModelManifestResponse:
        manifest, signature = self.c.models.manifest(request.name)
        return pb.GetModelManifestResponse(manifest=manifest, signature=signature)

    @streaming
    def DownloadModelFile(
        self, request: pb.DownloadModelFileRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.FileChunk]:
        path, size = self.c.models.file(request.name, request.path)
        if request.offset > size:
            raise InvalidArgument("offset", f"0 to {size} (the file's size), got {request.offset}")
        with path.open("rb") as handle:
            handle.seek(request.offset)
            while chunk := handle.read(DOWNLOAD_CHUNK):
                yield pb.FileChunk(data=chunk)
