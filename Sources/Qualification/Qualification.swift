import VFIO
