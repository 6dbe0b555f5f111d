"""mkdocs hook: the weights page's table, made at build time from torchvision's enums (their metrics, sizes and
URLs) and timm's hub repos of the same weights, so it can never disagree with them."""

from __future__ import annotations


def weights_table() -> str:
    from cutlass_resnet.models import get_model_weights, list_models
    from cutlass_resnet.pretrained.config import TIMM_TAGS

    rows = [
        "| model | weights | acc@1 | acc@5 | params | GFLOPS | MB | files |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in list_models():
        enum = get_model_weights(arch)
        for member in enum:
            meta = member.meta
            metrics = meta["_metrics"]["ImageNet-1K"]
            tag = TIMM_TAGS.get(member.name)
            files = f"[torchvision]({member.url})"
            if tag:
                files += f" · [hub](https://huggingface.co/timm/{arch}.{tag})"
            name = f"**{member.name}**" if member is enum.DEFAULT else member.name
            rows.append(
                f"| {arch} | {name} | {metrics['acc@1']:.3f} | {metrics['acc@5']:.3f} | "
                f"{meta['num_params'] / 1e6:.1f}M | {meta['_ops']:.2f} | {meta['_file_size']:.0f} | {files} |"
            )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_path == "weights.md":
        return markdown.replace("<!-- weights-table -->", weights_table())
    return markdown
