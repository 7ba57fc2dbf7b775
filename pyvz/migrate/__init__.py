"""Moving CTs between hosts: vzmigrate, its wire protocol, and the checks on what arrives."""
