"""Model cards: what save_pretrained writes is a huggingface_hub model card."""

from __future__ import annotations


def test_model_cards_are_huggingface_hub_model_cards(tmp_path):
    from huggingface_hub import ModelCard

    from cutlass_resnet.pretrained.card import model_card

    config = {"architecture": "resnet50", "fused": True, "dtype": "float16", "source": "ResNet50_Weights.IMAGENET1K_V2",
              "num_classes": 1000, "library_version": "0", "sha256": {"model.safetensors": "0" * 64}}  # fmt: skip
    card = ModelCard(model_card(config, "how"))
    assert card.data.library_name == "cutlass_resnet" and card.data.pipeline_tag == "image-classification"
    assert card.data.base_model == "timm/resnet50.tv2_in1k" and card.data.license == "bsd-3-clause"
    assert "acc@1 80.858" in card.text and "loads in cutlass-resnet only" in card.text
