"""Python client for a voxray server: `Client(url, api_key).predict({"flair": path, …}, out="mask.nii.gz")`."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx

from voxray.platform.errors import VoxrayError


class ServerError(VoxrayError):
    """The server refused or failed a request; the message carries its status and reason."""

    exit_code = 5

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"server answered {status}: {detail}",
                         hint="check the API key (VOXRAY_API_KEY)" if status == 401 else None)
        self.status = status


class Client:
    """Talks to POST /v1/predict and GET /v1/model; one HTTP connection pool per client."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 600.0,
                 api_key_env: str | None = "VOXRAY_API_KEY") -> None:
        key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerError(response.status_code, str(detail))
        return response

    def _get(self, path: str) -> httpx.Response:
        try:
            return self._check(self._http.get(path))
        except httpx.TransportError as exc:
            raise VoxrayError(f"cannot reach {self._http.base_url}: {exc}",
                              hint="is the server up? `voxray serve registry/<name>`") from None

    def health(self) -> bool:
        return self._get("/healthz").json().get("status") == "ok"

    def model(self) -> dict:
        """The served model's card facts (name, version, channels, labels, metrics)."""
        return self._get("/v1/model").json()

    def _post(self, inputs: Mapping[str, str | Path] | str | Path, fmt: str, **params: str | None) -> httpx.Response:
        items = inputs.items() if isinstance(inputs, Mapping) else [("image", inputs)]
        handles = [(name, open(path, "rb")) for name, path in items]
        query = {"format": fmt} | {k: v for k, v in params.items() if v is not None}
        try:
            files = [(name, (Path(fh.name).name, fh, "application/octet-stream")) for name, fh in handles]
            return self._check(self._http.post("/v1/predict", params=query, files=files))
        except httpx.TransportError as exc:
            raise VoxrayError(f"request to {self._http.base_url} failed: {exc}") from None
        finally:
            for _, fh in handles:
                fh.close()

    def predict(self, inputs: Mapping[str, str | Path] | str | Path, out: str | Path | None = None, *,
                tta: str | None = None) -> Any:
        """Mask for {channel: path} or one 4D path as a nibabel image (written to `out` when given); `tta`:
        none, mirror or axes such as "0,2" (default: the model card's)."""
        import nibabel as nib

        body = self._post(inputs, "nifti", tta=tta).content
        if out is not None:
            Path(out).write_bytes(body)
        return nib.Nifti1Image.from_bytes(gzip.decompress(body))

    def predict_outputs(self, inputs: Mapping[str, str | Path] | str | Path, outputs: Sequence[str], *,
                        tta: str | None = None) -> dict[str, bytes]:
        """Several outputs in one request (mask, probabilities, uncertainty): {"mask.nii.gz": gzipped NIfTI bytes, …,
        "summary.json": the `predict_json` answer}."""
        import io
        import zipfile

        response = self._post(inputs, "zip", outputs=",".join(outputs), tta=tta)
        with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}

    def predict_json(self, inputs: Mapping[str, str | Path] | str | Path, *, tta: str | None = None) -> dict:
        """Per-class volumes (ml), lesion counts and the uncertainty score instead of the mask."""
        return self._post(inputs, "json", tta=tta).json()
