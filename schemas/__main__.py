from schemas.export import write_schemas

for path in write_schemas():
    print(path)
