"""Instance segmentation data: COCO-format and Pascal VOC readers, their instances as Mask R-CNN
targets, and the detection splits."""
