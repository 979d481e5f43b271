"""OpenVINO on the CPU: :mod:`.modes` names its precisions (variant + inference precision, no import of OpenVINO),
:mod:`.model` runs a bundle's model, :mod:`.cache` keeps compiled models keyed and verified outside the bundle."""
