import CVFIO
