import CPCI
