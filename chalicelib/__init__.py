"""cargohold: a serverless OCI Distribution registry on S3 and DynamoDB."""
