"""The registry service: protocol handlers over S3 and DynamoDB storage."""
