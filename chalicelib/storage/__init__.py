"""Storage on AWS primitives: blobs in S3, metadata in DynamoDB."""
