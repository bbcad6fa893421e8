"""Any standard-library module WASI allows imports in pylon.wasm."""
import decimal
import hashlib
import json
import sqlite3
import xml.etree.ElementTree as ET

print(json.dumps({"pi": str(decimal.Decimal(355) / decimal.Decimal(113))}))
print(hashlib.sha256(b"pylon").hexdigest()[:16])
print(ET.fromstring("<a><b>xml</b></a>").find("b").text)
db = sqlite3.connect(":memory:")
print(db.execute("select sqlite_version()").fetchone()[0])
